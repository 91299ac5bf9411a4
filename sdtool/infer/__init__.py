"""The inference core under every command.

  sampling  one sampling function over any SDFlow-like model and operation (x4 SR, /4 downscale): padding,
            the draws of a sample, tiling, the colour guard; the only caller of `tiling.run_tiled`.
  jobs      input discovery, output naming, per-file seeds, checks on OUT.
  batch     the batch engine: skip existing outputs, claims, outcomes and progress events.
"""
