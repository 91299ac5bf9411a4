"""The sizes of an SDFlow read back from a checkpoint's key names and tensor shapes, without building it.

A checkpoint's metadata says which config built it; before a model of that config is allocated, the config is
compared with what the tensors in the file hold (like spandrel, which recognises a layout from its keys and
reads sizes from shapes). A config that asks for more steps, blocks or channels than the file holds is refused
at once, whatever it asks for.
"""

from __future__ import annotations

import re
from typing import Mapping

Shapes = Mapping[str, tuple[int, ...]]


def _indices(shapes: Shapes, pattern: str) -> list[int]:
    """Sorted distinct integers that `pattern`'s group 1 matches at the start of the keys."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for key in shapes if (m := rx.match(key))})


def _width(shapes: Shapes, key: str) -> tuple[int, str]:
    """Output channels of the tensor `key` (its first dimension), and where they were read; KeyError naming the
    key when it is absent."""
    shape = shapes.get(key)
    if not shape:
        raise KeyError(key)
    return int(shape[0]), f"'{key}' is {tuple(shape)}"


def _count(shapes: Shapes, pattern: str, shown: str) -> tuple[int, str]:
    return len(_indices(shapes, pattern)), f"{shown}.N"


def sdflow_sizes(shapes: Shapes) -> dict[str, tuple[object, str]]:
    """Every size field of `SDFlowConfig` (all but `name`) as the tensors in `shapes` give them, each with the
    tensor or key pattern it was read from. Raises KeyError naming a tensor that an SDFlow always has when the
    file lacks it."""
    steps = _indices(shapes, r"hr_flow\.transforms\.(\d+)\.transforms\.0\.loc$")
    if not steps:
        raise KeyError("hr_flow.transforms.5.transforms.0.loc")
    # HR-flow steps after the first squeeze act on 12 channels, those after the second on 48 (ActNorm loc 1×C×1×1).
    channels = [tuple(shapes[f"hr_flow.transforms.{i}.transforms.0.loc"])[1:2] for i in steps]
    flow_step = r"\.(\d+)\.transforms\.0\.loc$"
    return {
        "hidden": _width(shapes, f"hr_flow.transforms.{steps[0]}.transforms.2.net.conv1.weight"),
        "hr_steps": ((channels.count((12,)), channels.count((48,))), "hr_flow.transforms.N"),
        "lr_steps": _count(shapes, r"lr_flow\.transforms" + flow_step, "lr_flow.transforms"),
        "hf_steps": _count(shapes, r"hf_flow\.flow\.transforms" + flow_step, "hf_flow.flow.transforms"),
        "hf_rrdb": _count(shapes, r"hf_flow\.cond_net\.trunk\.(\d+)\.", "hf_flow.cond_net.trunk"),
        "deg_steps": _count(shapes, r"deg_flow\.flow\.transforms" + flow_step, "deg_flow.flow.transforms"),
        "deg_rrdb": _count(shapes, r"deg_flow\.cond_net\.features\.trunk\.(\d+)\.", "deg_flow.cond_net.features.trunk"),
        "rrdb_nf": _width(shapes, "hf_flow.cond_net.in_conv.weight"),
        "rrdb_gc": _width(shapes, "hf_flow.cond_net.trunk.0.blocks.0.convs.0.weight"),
        "cond_channels": _width(shapes, "hf_flow.cond_net.out2.weight"),
        "enc_nc": _width(shapes, "extractor.in_conv.weight"),
        "enc_blocks": _count(shapes, r"extractor\.trunk\.(\d+)\.", "extractor.trunk"),
        "enc_mf_convs": _count(shapes, r"extractor\.mf_convs\.(\d+)\.", "extractor.mf_convs"),
        "n_gaussian": _width(shapes, "deg_prior.means"),
    }


def _layers(shapes: Shapes, prefix: str) -> list[tuple[int, ...]]:
    """Weight shapes of the layers of an nn.Sequential at `prefix`, in order (activations hold none)."""
    return [tuple(shapes[f"{prefix}.{i}.weight"]) for i in _indices(shapes, re.escape(prefix) + r"\.(\d+)\.weight$")]


def pdm_sizes(shapes: Shapes) -> dict[str, tuple[object, str]]:
    """The size fields of `PDMConfig` that shape its tensors, as `shapes` give them (hidden widths only when there
    is a hidden layer). Raises KeyError naming a tensor that a PDM always has when the file lacks it."""
    k, n = _layers(shapes, "net_k.net"), _layers(shapes, "net_n.net")
    if not k:
        raise KeyError("net_k.net.0.weight")
    if not n:
        raise KeyError("net_n.net.0.weight")
    sizes: dict[str, tuple[object, str]] = {
        "k_layers": (len(k), "net_k.net.N.weight"),
        "n_layers": (len(n), "net_n.net.N.weight"),
        "zk_dim": (k[0][1] if len(k[0]) > 1 else 0, f"'net_k.net.0.weight' is {k[0]}"),
        "spatial": (len(k[0]) == 4, f"'net_k.net.0.weight' is {k[0]}"),
        "kernel_size": (round(k[-1][0] ** 0.5), f"the last net_k weight is {k[-1]}"),
        "signal_dependent": (len(n[0]) > 1 and n[0][1] == 6, f"'net_n.net.0.weight' is {n[0]}"),
    }
    if len(k) > 1:
        sizes["k_hidden"] = (k[0][0], f"'net_k.net.0.weight' is {k[0]}")
    if len(n) > 1:
        sizes["n_hidden"] = (n[0][0], f"'net_n.net.0.weight' is {n[0]}")
    return sizes
