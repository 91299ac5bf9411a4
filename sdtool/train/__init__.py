"""Training: data sampling, tasks (SDFlow, PDM) and the generic runner."""
