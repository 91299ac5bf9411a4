"""Convert the authors' four SDFlow checkpoints (lrencoder, hrnet, contentnet, degnet .pth) to one
sdtool safetensors file.

Like spandrel: the layout is recognised from the key set, sizes are read from tensor shapes, and the
error names the key that is missing or has the wrong shape.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Union

import torch

from sdtool.config import SDFlowConfig
from sdtool.errors import CheckpointError

OFFICIAL_FILES = ("lrencoder", "hrnet", "contentnet", "degnet")
# Buffers the authors store but that follow from the rest (masks and identity of the LU 1×1 conv).
DERIVED = ("u_mask", "l_mask", "l_eye")

State = dict[str, torch.Tensor]


def _count(state: State, pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in state if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def _shape(state: State, key: str, stem: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{stem}.pth: missing key '{key}' (not an SDFlow checkpoint of the authors' layout?)")
    return tuple(state[key].shape)


def infer_config(files: dict[str, State]) -> SDFlowConfig:
    """Read every size of the model from the authors' key set and tensor shapes."""
    lr, hr, ct, dg = (files[s] for s in OFFICIAL_FILES)
    hf = "blocks.1.split.conditional_flow."
    return SDFlowConfig(
        name="official",
        hidden=_shape(hr, "blocks.0.steps.0.affine_coulping.net.conv1.conv2d.weight", "hrnet")[0],
        hr_steps=(_count(hr, r"blocks\.0\.steps\.(\d+)\."), _count(hr, r"blocks\.1\.steps\.(\d+)\.")),
        lr_steps=_count(ct, r"blocks\.0\.steps\.(\d+)\."),
        hf_steps=_count(hr, re.escape(hf) + r"additional_flow_steps\.(\d+)\."),
        hf_rrdb=_count(hr, re.escape(hf) + r"cond_net\.trunk\.(\d+)\."),
        deg_steps=_count(dg, r"deg_net\.additional_flow_steps\.(\d+)\."),
        deg_rrdb=_count(dg, r"deg_net\.cond_net\.0\.trunk\.(\d+)\."),
        rrdb_nf=_shape(hr, hf + "cond_net.in_conv.1.weight", "hrnet")[0],
        rrdb_gc=_shape(hr, hf + "cond_net.trunk.0.RDB1.conv1.weight", "hrnet")[0],
        cond_channels=_shape(hr, hf + "cond_net.out_conv.4.weight", "hrnet")[0],
        enc_nc=_shape(lr, "in_conv.1.weight", "lrencoder")[0],
        enc_blocks=_count(lr, r"trunk\.(\d+)\."),
        enc_mf_convs=sum(1 for k in lr if re.fullmatch(r"mf_conv\.\d+\.weight", k)),
        n_gaussian=_shape(dg, "means", "degnet")[0],
    )


def _step_map(rest: str) -> str:
    """Inside one official FlowStep → our FlowStep (Sequential of actnorm, conv, [injector], [coupling])."""
    if m := re.fullmatch(r"(actnorm|permute)\.(.+)", rest):
        return f"transforms.{0 if m.group(1) == 'actnorm' else 1}.{m.group(2)}"
    m = re.fullmatch(r"(affine_injector|affine_coulping)\.net\.(.+)", rest)
    if not m:
        raise KeyError(rest)
    # The injector, when present, sits before the coupling; the caller fixes the index for couplings.
    slot = "INJ" if m.group(1) == "affine_injector" else "CPL"
    return f"transforms.{slot}.net.{_subnet_map(m.group(2))}"


def _subnet_map(rest: str) -> str:
    table = {"conv1.conv2d.": "conv1.", "conv2.conv2d.": "conv2.", "conv3.conv.": "out.conv.", "conv3.logs": "out.logs"}
    for old, new in table.items():
        if rest.startswith(old):
            return new + rest[len(old):]
    raise KeyError(rest)


def _rrdb_map(rest: str) -> str:
    if m := re.fullmatch(r"in_conv\.1\.(weight|bias)", rest):
        return f"in_conv.{m.group(1)}"
    if m := re.fullmatch(r"trans\.1\.(weight|bias)", rest):
        return f"trans.{m.group(1)}"
    if m := re.fullmatch(r"out_conv\.([14])\.(weight|bias)", rest):
        return f"{'out1' if m.group(1) == '1' else 'out2'}.{m.group(2)}"
    if m := re.fullmatch(r"trunk\.(\d+)\.RDB([123])\.conv([1-5])\.(weight|bias)", rest):
        return f"trunk.{m.group(1)}.blocks.{int(m.group(2)) - 1}.convs.{int(m.group(3)) - 1}.{m.group(4)}"
    raise KeyError(rest)


def _transition_map(t: int, rest: str, base: int) -> str:
    """transitions.{t}.actnorm / inv_conv → two consecutive transforms starting at `base`."""
    kind, _, leaf = rest.partition(".")
    return f"transforms.{base + 2 * t + (0 if kind == 'actnorm' else 1)}.{leaf}"


def map_key(stem: str, key: str, cfg: SDFlowConfig) -> str:
    """Official `<stem>.pth` key → sdtool key. Raises KeyError for keys outside the known layout."""
    s0, s1 = cfg.hr_steps
    if stem == "hrnet":
        if m := re.fullmatch(r"blocks\.([01])\.squeeze_transition\.transitions\.(\d+)\.(.+)", key):
            base = 1 if m.group(1) == "0" else 1 + 4 + s0 + 1
            return "hr_flow." + _transition_map(int(m.group(2)), m.group(3), base)
        if m := re.fullmatch(r"blocks\.([01])\.steps\.(\d+)\.(.+)", key):
            base = 5 if m.group(1) == "0" else 5 + s0 + 5
            return f"hr_flow.transforms.{base + int(m.group(2))}." + _fix_slots(_step_map(m.group(3)), False)
        prefix = "blocks.1.split.conditional_flow."
        if key.startswith(prefix + "cond_net."):
            return "hf_flow.cond_net." + _rrdb_map(key[len(prefix + "cond_net."):])
        if m := re.fullmatch(re.escape(prefix) + r"additional_flow_steps\.(\d+)\.(.+)", key):
            return f"hf_flow.flow.transforms.{m.group(1)}." + _fix_slots(_step_map(m.group(2)), True)
    elif stem == "contentnet":
        if m := re.fullmatch(r"blocks\.0\.squeeze_transition\.transitions\.(\d+)\.(.+)", key):
            return "lr_flow." + _transition_map(int(m.group(1)), m.group(2), 1)
        if m := re.fullmatch(r"blocks\.0\.expand_transition\.transitions\.(\d+)\.(.+)", key):
            return "lr_flow." + _transition_map(int(m.group(1)), m.group(2), 5 + cfg.lr_steps)
        if m := re.fullmatch(r"blocks\.0\.steps\.(\d+)\.(.+)", key):
            return f"lr_flow.transforms.{5 + int(m.group(1))}." + _fix_slots(_step_map(m.group(2)), False)
    elif stem == "lrencoder":
        if m := re.fullmatch(r"in_conv\.1\.(weight|bias)", key):
            return f"extractor.in_conv.{m.group(1)}"
        if m := re.fullmatch(r"mf_conv\.(\d+)\.(weight|bias)", key):
            return f"extractor.mf_convs.{int(m.group(1)) // 3}.{m.group(2)}"
        if m := re.fullmatch(r"out_conv\.([13])\.(weight|bias)", key):
            return f"extractor.{'out1' if m.group(1) == '1' else 'out2'}.{m.group(2)}"
        if m := re.fullmatch(r"trunk\.(\d+)\.(fm[12]\..+)", key):
            return f"extractor.trunk.{m.group(1)}.{m.group(2)}"
        if m := re.fullmatch(r"trunk\.(\d+)\.conv([12])\.1\.(weight|bias)", key):
            return f"extractor.trunk.{m.group(1)}.conv{m.group(2)}.{m.group(3)}"
    elif stem == "degnet":
        if key in ("means", "log_stds"):
            return f"deg_prior.{key}"
        if key.startswith("deg_net.cond_net.0."):
            return "deg_flow.cond_net.features." + _rrdb_map(key[len("deg_net.cond_net.0."):])
        if m := re.fullmatch(r"deg_net\.cond_net\.2\.(weight|bias)", key):
            return f"deg_flow.cond_net.reduce.{m.group(1)}"
        if m := re.fullmatch(r"deg_net\.squeeze_transition\.transitions\.(\d+)\.(.+)", key):
            return "deg_flow.flow." + _transition_map(int(m.group(1)), m.group(2), 1)
        if m := re.fullmatch(r"deg_net\.additional_flow_steps\.(\d+)\.(.+)", key):
            return f"deg_flow.flow.transforms.{5 + int(m.group(1))}." + _fix_slots(_step_map(m.group(2)), True)
    raise KeyError(key)


def _fix_slots(key: str, conditional: bool) -> str:
    return key.replace("transforms.INJ.", "transforms.2.").replace(
        "transforms.CPL.", "transforms.3." if conditional else "transforms.2."
    )


def convert_state(files: dict[str, State], source: str = "official checkpoint") -> tuple[torch.nn.Module, SDFlowConfig]:
    """Build an SDFlow model holding the authors' weights. Every official key is used or checked."""
    from sdtool.model.sdflow import SDFlow

    missing_files = [s for s in OFFICIAL_FILES if s not in files]
    if missing_files:
        raise CheckpointError(f"{source}: missing {', '.join(s + '.pth' for s in missing_files)}")
    cfg = infer_config(files)
    model = SDFlow(cfg)
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for stem in OFFICIAL_FILES:
        for key, value in files[stem].items():
            if key.rsplit(".", 1)[-1] in DERIVED:
                continue
            try:
                ours = map_key(stem, key, cfg)
            except KeyError:
                raise CheckpointError(f"{stem}.pth: unexpected key '{key}' (not in the SDFlow layout)") from None
            if ours not in target:
                raise CheckpointError(f"{stem}.pth: key '{key}' maps to '{ours}', which this model does not have")
            if tuple(value.shape) != tuple(target[ours].shape):
                raise CheckpointError(
                    f"{stem}.pth: key '{key}' has shape {tuple(value.shape)}, expected {tuple(target[ours].shape)}"
                )
            out[ours] = value.to(target[ours].dtype)
    absent = [k for k in target if k not in out]
    if absent:
        raise CheckpointError(f"{source}: no official key provides '{absent[0]}' ({len(absent)} missing in all)")
    _check_lu_buffers(files)
    model.load_state_dict(out, strict=True)
    return model.eval(), cfg


def _check_lu_buffers(files: dict[str, State]) -> None:
    """The masks we do not store must be the standard triangular ones, or the weights would mean something else."""
    for stem, state in files.items():
        for key, value in state.items():
            if key.endswith(".u_mask"):
                c = value.shape[0]
                if not torch.equal(value.float(), torch.triu(torch.ones(c, c), 1)):
                    raise CheckpointError(f"{stem}.pth: '{key}' is not a strictly upper-triangular mask")


def load_official_dir(directory: Union[str, Path]) -> dict[str, State]:
    """Read lrencoder.pth, hrnet.pth, contentnet.pth, degnet.pth safely (weights_only=True)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a folder (expected the authors' four .pth files)")
    files: dict[str, State] = {}
    for stem in OFFICIAL_FILES:
        path = directory / f"{stem}.pth"
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (expected {', '.join(s + '.pth' for s in OFFICIAL_FILES)})")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot be read as a PyTorch state dict ({type(exc).__name__})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
        files[stem] = state
    return files


def split_prefixed(tensors: State) -> dict[str, State]:
    """`<stem>.<official key>` tensors (one-file layout) → per-file state dicts."""
    files: dict[str, State] = {}
    for key, value in tensors.items():
        stem, _, rest = key.partition(".")
        files.setdefault(stem, {})[rest] = value
    return files


def convert_official(source: Union[str, Path], output: Union[str, Path], overwrite: bool = False) -> SDFlowConfig:
    """Convert a folder of the authors' .pth files (or a one-file `<stem>.<key>` safetensors) to `output`."""
    from sdtool.checkpoint import read_safetensors, save_model

    source, output = Path(source), Path(output)
    if output.exists() and not overwrite:
        raise CheckpointError(f"{output}: already exists (choose another name)")
    if source.is_file() and source.suffix == ".safetensors":
        files = split_prefixed(read_safetensors(source)[0])
    else:
        files = load_official_dir(source)
    model, cfg = convert_state(files, str(source))
    save_model(model, output, provenance={"converted_from": str(source.name), "layout": "sunwj/sdflow official"})
    return cfg
