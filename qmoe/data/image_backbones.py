"""timm image backbones on the log-Mel image (DESIGN §2.3): ``efficientnet_b3``, ``mobilenetv3_large_100``.

The Mel image of a clip, as the networks see it:

1. the log-Mel power (n_mels, T) is put on a decibel scale relative to the clip's own peak,
   clipped 80 dB below it and mapped to [0, 1] (1 = the loudest bin), as
   ``librosa.power_to_db(ref=np.max, top_db=80)`` would before scaling;
2. flipped so the lowest band is the bottom row (as spectrograms are drawn);
3. resized with bilinear interpolation to the network's default input size
   (``pretrained_cfg["input_size"]``: 288 x 288 for efficientnet_b3, 224 x 224 for
   mobilenetv3_large_100), whatever the clip length or n_mels;
4. copied to 3 channels and normalised with the ImageNet mean and std.

The networks are built with ``num_classes=0`` (global average pooling, no classifier).
Their weights come from one of:

- a local file (a state dict ``.pt/.pth/.bin`` or ``.safetensors``), whose classifier
  entries are ignored; weights that do not fit the network fail with one line saying how;
- timm's own pretrained loading (:func:`load_pretrained`): ``timm.create_model(name,
  pretrained=True)``, which reads the weights of the model's default tag
  (``timm/efficientnet_b3.ra2_in1k``) from the Hugging Face hub cache (``HF_HOME``,
  ``HF_HUB_CACHE``) and downloads them only when ``HF_HUB_OFFLINE`` allows it;
- ``random_init`` (tests only): a seeded, untrained network.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from qmoe.data.cache import sha256_file
from qmoe.data.features import Backbone
from qmoe.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Embedding size of each timm backbone (``num_classes=0`` pooled features).
TIMM_BACKBONES: dict[str, int] = {"efficientnet_b3": 1536, "mobilenetv3_large_100": 1280}
#: The Mel image size (H, W) each network sees: timm's ``pretrained_cfg["input_size"]``
#: (a test keeps the two in step), known here without building the network.
INPUT_SIZES: dict[str, tuple[int, int]] = {"efficientnet_b3": (288, 288), "mobilenetv3_large_100": (224, 224)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOP_DB = 80.0
#: Images per forward pass: small batches run faster on CPU here (cache-resident activations).
MICRO_BATCH = 8


#: The one-line refusal of a timm backbone without weights.
NEEDS_WEIGHTS = ("backbone {name} needs its ImageNet weights: pass --weights pretrained (timm's "
                 "pretrained loading through the Hugging Face cache) or --weights FILE (a local state "
                 "dict .pt/.pth or .safetensors). --random-init exists for tests only: its embeddings "
                 "are meaningless")


class WeightsError(DataError):
    """A ``--weights`` file that is missing, unreadable or does not fit the backbone."""


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: ``.safetensors``, or a torch state dict (``weights_only``).

    A checkpoint that wraps the state dict (``{"state_dict": ...}``, ``{"model": ...}``) is
    unwrapped, and a ``module.`` prefix (DataParallel) is removed.

    Raises:
        WeightsError: the file is missing or holds no tensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"--weights {path}: no such file; give a local state dict (.pt/.pth) "
                           "or .safetensors file")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch/safetensors raise many types for a bad file
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise WeightsError(f"--weights {path}: not a readable state dict or safetensors file ({reason})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"--weights {path}: holds no tensors; give a state dict (.pt/.pth) or .safetensors file")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _fit_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], name: str, source: str) -> None:
    """Load ``state`` into ``model`` strictly (classifier entries ignored), or one-line WeightsError."""
    classifier = str(getattr(model, "pretrained_cfg", {}).get("classifier", "classifier"))
    state = {k: v for k, v in state.items() if not k.startswith(classifier + ".")}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with another shape (first: {k} is {tuple(state[k].shape)} in the "
                         f"file, {tuple(own[k].shape)} in {name})")
        if missing:
            parts.append(f"{len(missing)} of {len(own)} tensors missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unknown to {name} (first: {unexpected[0]})")
        raise WeightsError(f"--weights {source} does not match backbone {name}: {'; '.join(parts)}; "
                           f"give the {name} weights, or pick the --backbone they belong to")
    model.load_state_dict(state, strict=True)


#: Files timm's hub loader tries, in its order (``timm.models._hub.load_state_dict_from_hf``:
#: the safetensors alternative first, then the pickled default).
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True, eq=False)
class PretrainedWeights:
    """What timm's pretrained loading read, for the table's metadata and the workers.

    Attributes:
        tag: the hub model id timm loaded, e.g. ``timm/efficientnet_b3.ra2_in1k``.
        revision: the snapshot (commit) of the hub repository the file came from.
        file: the cached weights file timm read.
        sha256: sha256 of that file's bytes (the extraction cache keys on it).
        state_dict: the pooled network's weights (no classifier), shipped to the workers.
    """

    tag: str
    revision: str | None
    file: Path
    sha256: str
    state_dict: dict[str, torch.Tensor]


def load_pretrained(name: str) -> PretrainedWeights:
    """Build ``name`` with timm's pretrained loading and say which weights it read.

    ``timm.create_model(name, pretrained=True, num_classes=0)`` reads the default tag's
    weights through ``huggingface_hub.hf_hub_download``: from the hub cache when there, else
    downloaded into it -- unless ``HF_HUB_OFFLINE`` is set (qmoe's CLI sets it to 1 unless
    the environment says otherwise).

    Raises:
        WeightsError: the weights are not cached and cannot be downloaded, or cannot be read.
    """
    import timm  # ~1 s to import; only the timm backbones need it
    from huggingface_hub import constants, try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name)
    tag = getattr(cfg, "hf_hub_id", None)
    if not tag:
        raise WeightsError(f"--weights pretrained: timm has no hub weights for {name}; pass --weights FILE")
    repo, _, revision = tag.partition("@")
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as err:  # hub, network and file errors come in many types
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        if constants.HF_HUB_OFFLINE:
            how = ("it is not in the Hugging Face cache " f"{constants.HF_HUB_CACHE} and HF_HUB_OFFLINE=1 "
                   "forbids downloading (qmoe sets it unless the environment does): run with "
                   "HF_HUB_OFFLINE=0 on a machine with internet once, or pass --weights FILE")
        else:
            how = f"timm could not load it ({type(err).__name__}: {reason}); check the network, or pass --weights FILE"
        raise WeightsError(f"--weights pretrained: {tag} for {name}: {how}") from None
    for filename in HUB_WEIGHT_FILES:
        found = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(found, str):
            file = Path(found)
            break
    else:  # timm loaded them, so they are cached; a cache layout we do not know otherwise
        raise WeightsError(f"--weights pretrained: timm loaded {tag} but no {' or '.join(HUB_WEIGHT_FILES)} "
                           f"of it is in {constants.HF_HUB_CACHE}; pass --weights FILE")
    snapshot = file.parent.name if file.parent.parent.name == "snapshots" else None
    log.info("%s: pretrained weights %s (%s)", name, tag, file)
    return PretrainedWeights(tag=repo, revision=snapshot, file=file, sha256=sha256_file(file),
                             state_dict=dict(model.state_dict()))


def mel_image(logmel: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The ImageNet-normalised 3-channel Mel image of a batch (see the module docstring).

    Args:
        logmel: ``log(mel_power + eps)``, shape (B, n_mels, T).
        size: output (height, width).

    Returns:
        float32 tensor (B, 3, height, width).
    """
    span = TOP_DB * math.log(10.0) / 10.0  # 80 dB in natural-log units
    peak = logmel.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    img = ((logmel - peak) / span + 1.0).clamp(0.0, 1.0).flip(1)  # (B, n_mels, T), low bands at the bottom
    img = F.interpolate(img[:, None], size=size, mode="bilinear", align_corners=False)  # (B, 1, H, W)
    mean = torch.tensor(IMAGENET_MEAN, dtype=img.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=img.dtype).view(1, 3, 1, 1)
    return (img.expand(-1, 3, -1, -1) - mean) / std  # (B, 3, H, W)


def build_timm(name: str, *, state_dict: Mapping[str, torch.Tensor] | None = None,
               weights_source: str = "<state dict>", random_init: bool = False,
               seed: int = 0) -> torch.nn.Module:
    """The pooled timm network ``name`` in eval mode, with the given weights.

    Raises:
        ConfigError: neither weights nor ``random_init``, or both.
        WeightsError: weights that do not fit.
    """
    if state_dict is None and not random_init:
        raise ConfigError(NEEDS_WEIGHTS.format(name=name))
    if state_dict is not None and random_init:
        raise ConfigError("--weights and --random-init exclude each other; pass one of them")
    import timm  # ~1 s to import; only the timm backbones need it

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same untrained network in every process
        model = timm.create_model(name, pretrained=False, num_classes=0)
    if state_dict is not None:
        _fit_weights(model, state_dict, name, weights_source)
    return model.eval().to(memory_format=torch.channels_last)


def timm_backbone(name: str):
    """The factory of timm backbone ``name`` (registered in :data:`qmoe.data.backbones.BACKBONES`)."""

    def factory(*, state_dict: Mapping[str, torch.Tensor] | None = None, weights_source: str = "<state dict>",
                random_init: bool = False, seed: int = 0) -> Backbone:
        model = build_timm(name, state_dict=state_dict, weights_source=weights_source,
                           random_init=random_init, seed=seed)
        size = INPUT_SIZES[name]

        def pool(logmel: torch.Tensor) -> torch.Tensor:
            out = []
            with torch.inference_mode():
                for part in logmel.split(MICRO_BATCH):
                    img = mel_image(part, size).contiguous(memory_format=torch.channels_last)
                    out.append(model(img))  # (b, D)
            return torch.cat(out)  # (B, D)

        return pool

    factory.__doc__ = f"timm {name} on the Mel image, {TIMM_BACKBONES[name]}-d pooled features."
    return factory


def needs_weights(backbone: str) -> bool:
    """True for backbones that need weights (``--weights FILE|pretrained`` or ``--random-init``)."""
    return backbone in TIMM_BACKBONES

