"""Pretrained encoders out of a finished run: `bench export RUN_DIR --to timm|safetensors`.

Both formats are safetensors files whose metadata (`maskbench`, JSON) names the run, its
data spec and how to load the file.

- `timm`, ViT presets: the state dict of timm's `VisionTransformer` built as our encoder is:
  no class token, the run's image size, patch size and channels, the fixed 2-D sin-cos table
  as `pos_embed`, timm's own `Block`s (LayerNorm eps 1e-6, as ours), the final LayerNorm on
  every token, then the mean over tokens (`global_pool="avg"` with `fc_norm=False`: timm's
  default for avg pooling would pool first and normalise after). So `model(x)` is the
  encoder's pooled features and `model.forward_features(x)` its tokens. Loaded by
  `timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=FILE, ...), ...)`.
- `timm`, CNN presets: the timm trunk the encoder wraps (`features_only`, cut at the stage of
  stride = patch size), loaded by `timm.create_model(ARCH, features_only=True,
  out_indices=(STAGE,), ..., checkpoint_path=FILE)`: it returns that stage's feature map. The
  run's Linear + LayerNorm on top of the trunk are not part of timm's network: they are in the
  `safetensors` export.
- `safetensors`: the encoder's own state dict (bench.models names), any preset and modality
  (text encoders have no timm counterpart).

Torch and timm are imported only when exporting, so `bench report` can name the commands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core import files, store
from bench.core.errors import ExportError
from bench.core.exports import FORMATS, default_out, export_name, run_folder_of
from bench.core.references import REFERENCE_ROWS

# The timm architecture each ViT preset is spelled as (every size argument is passed anyway).
TIMM_VIT = {"vit-micro": "vit_tiny_patch16_224", "vit-tiny": "vit_tiny_patch16_224",
            "vit-small": "vit_small_patch16_224", "vit-base": "vit_base_patch16_224"}
METADATA_KEY = "maskbench"


def finished_run(run_dir: Path) -> dict[str, Any]:
    """config.json of a finished, pretrained run, else ExportError saying what is missing."""
    run_dir = Path(run_dir)
    if not (run_dir / files.CONFIG).is_file():
        raise ExportError(f"{run_dir} is not a run folder (no {files.CONFIG})")
    try:
        summary = store.read_json(run_dir / files.SUMMARY)
    except (OSError, ValueError):
        raise ExportError(f"run {run_dir} has not finished (no {files.SUMMARY}); rerun its "
                          "command to finish it, then export") from None
    if summary.get("status") != "ok":
        raise ExportError(f"run {run_dir} {summary.get('status', 'did not finish')}: "
                          f"{summary.get('error', 'no error recorded')}; nothing to export")
    config = store.read_json(run_dir / files.CONFIG)
    if config.get("method") in REFERENCE_ROWS:
        raise ExportError(f"run {run_dir} is the {config['method']} reference row: it "
                          "pretrained nothing")
    if not isinstance(config.get("data_spec"), dict):
        raise ExportError(f"{run_dir / files.CONFIG} has no data_spec (the run predates bench "
                          "export); retrain it in a new results folder to export it")
    if not (run_dir / files.CHECKPOINT).is_file():
        raise ExportError(f"run {run_dir} has no {files.CHECKPOINT}: its weights are gone")
    return config


@dataclass
class Exported:
    path: Path
    tensors: int
    load: str  # Python that loads the file (printed by the CLI)


def _encoder(run_dir: Path, config: dict[str, Any]):
    """The run's trained encoder, rebuilt from its preset and data spec (eval mode)."""
    from bench.core.spec import DataSpec
    from bench.models.encoders import build_encoder

    fields = DataSpec.__dataclass_fields__
    spec = DataSpec(**{k: tuple(v) if k == "grid" else v
                       for k, v in config["data_spec"].items() if k in fields})
    encoder = build_encoder(config["encoder"], spec)
    model = store.load_torch(run_dir / files.CHECKPOINT)["model"]
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in model.items()
                             if k.startswith("encoder.")})
    return encoder.eval(), spec


def _kwargs(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


def _timm_vit(encoder, spec, config: dict[str, Any], file: Path):
    import timm

    name = TIMM_VIT[config["encoder"]]
    kwargs = dict(img_size=spec.image_size, patch_size=spec.patch_size, in_chans=spec.in_chans,
                  embed_dim=encoder.dim, depth=len(encoder.blocks),
                  num_heads=encoder.blocks[0].attn.num_heads,
                  mlp_ratio=encoder.blocks[0].mlp.fc1.out_features / encoder.dim,
                  class_token=False, global_pool="avg", fc_norm=False, num_classes=0)
    model = timm.create_model(name, pretrained=False, **kwargs)
    ours = encoder.state_dict()
    mapped = {"patch_embed.proj.weight": ours.pop("tokens.proj.weight"),
              "patch_embed.proj.bias": ours.pop("tokens.proj.bias"),
              "pos_embed": encoder.tokens.pos, **ours}  # blocks.* and norm.*: timm's names
    model.load_state_dict(mapped, strict=True)  # every tensor placed, nothing left over
    overlay = dict(file=str(file), num_classes=0, input_size=(spec.in_chans, *spec.image_size),
                   mean=tuple(config["data_spec"]["mean"]), std=tuple(config["data_spec"]["std"]),
                   crop_pct=1.0, interpolation="bilinear")
    load = (f"import timm\nmodel = timm.create_model({name!r}, pretrained=True, "
            f"pretrained_cfg_overlay=dict({_kwargs(overlay)}), {_kwargs(kwargs)}).eval()\n"
            f"features = model(x)  # [B, {encoder.dim}]: the encoder's mean-pooled features")
    return model.state_dict(), {"model_name": name, "kwargs": kwargs,
                                "pretrained_cfg_overlay": overlay}, load


def _timm_cnn(encoder, spec, file: Path):
    """The trunk as timm builds it, pruned after the run's stage as the run pruned it
    (timm's `prune_intermediate_layers`): the same parameter names, so the file loads
    strictly into it, and `forward_intermediates` gives the features the run's encoder read."""
    trunk = encoder.timm_trunk
    kwargs = dict(pretrained=False, num_classes=0, in_chans=spec.in_chans, **dict(trunk.overrides))
    load = (f"import timm\nfrom safetensors.torch import load_file\n"
            f"model = timm.create_model({trunk.arch!r}, {_kwargs(kwargs)}).eval()\n"
            f"model.prune_intermediate_layers(indices=[{encoder.stage}], prune_norm=True, "
            f"prune_head=True)\nmodel.load_state_dict(load_file({str(file)!r}))\n"
            f"(fmap,) = model.forward_intermediates(x, indices=[{encoder.stage}], "
            f"intermediates_only=True)  # [B, C, H/{spec.patch_size}, W/{spec.patch_size}]: the "
            "trunk's features (the run's Linear + LayerNorm on top: --to safetensors)")
    return encoder.trunk.state_dict(), {"model_name": trunk.arch, "kwargs": kwargs,
                                        "stage": encoder.stage}, load


def export_target(run_dir: Path, to: str, out: Path | None, force: bool) -> Path:
    """The file to write, or ExportError: never a file of a run folder (this run's own export
    file excepted: it is rewritten), nor into another run's folder; an existing file
    elsewhere only with `force`."""
    file = Path(out) if out is not None else default_out(run_dir, to)
    if file.is_dir():
        raise ExportError(f"--out {file} is a folder; name the file to write, e.g. "
                          f"{file / export_name(to)}")
    owner = run_folder_of(file)
    if owner is not None and owner.resolve() != run_dir.resolve():
        raise ExportError(f"{file} is inside the run folder {owner}, another run's; write the "
                          f"export outside it (default: {default_out(run_dir, to)})")
    if file.exists() and owner is not None and file.name != export_name(to):
        raise ExportError(f"{file} is a file of the run folder {owner}: bench export never "
                          "overwrites a run's files; choose another --out")
    if file.exists() and owner is None and not force:
        raise ExportError(f"{file} exists; add --force to overwrite it, or choose another --out")
    return file


def export_run(run_dir: Path, to: str, out: Path | None = None, force: bool = False) -> Exported:
    """Write the run's encoder to `out` (default RUN_DIR/encoder-<to>.safetensors; see
    `export_target` for what is never overwritten)."""
    from safetensors.torch import save

    if to not in FORMATS:
        raise ExportError(f"--to {to!r}: must be one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    config = finished_run(run_dir)
    modality = config["data_spec"].get("modality")
    if to == "timm" and modality != "image":
        raise ExportError(f"run {run_dir} has a {modality} encoder, which has no timm "
                          "counterpart; export it with --to safetensors")
    file = export_target(run_dir, to, out, force)
    encoder, spec = _encoder(run_dir, config)
    meta: dict[str, Any] = {k: config.get(k) for k in
                            ("run_id", "method", "options", "dataset", "encoder", "seed",
                             "data_spec", "git_sha")}
    if to == "safetensors":
        tensors = encoder.state_dict()
        load = ("from safetensors.torch import load_file\n"
                "from bench.models.encoders import build_encoder\nfrom bench.core.spec import DataSpec\n"
                f"encoder = build_encoder({config['encoder']!r}, DataSpec(**SPEC))"
                "  # SPEC: the data_spec in this file's metadata\n"
                f"encoder.load_state_dict(load_file({str(file)!r}))")
    elif encoder.kind == "token":
        tensors, meta["timm"], load = _timm_vit(encoder, spec, config, file)
    else:
        tensors, meta["timm"], load = _timm_cnn(encoder, spec, file)
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    meta["format"] = to
    store.write_bytes(file, save(tensors, metadata={METADATA_KEY: json.dumps(meta, default=str)}))
    return Exported(file, len(tensors), load)
