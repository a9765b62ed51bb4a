"""Direction artifacts: a tensor plus the metadata that says where it came from.

Saved as ``NAME.safetensors`` (the tensor) and ``NAME.json`` (model id, widths, site, position, data
hashes, scores, drtk version). Loading never executes anything, and using a direction on a model of
another shape is an error that says so.
"""

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jaxtyping import Float
from torch import Tensor

from drtk.errors import DataError, DirectionMismatchError

logger = logging.getLogger(__name__)

KINDS = ("single", "per_layer", "subspace")


@dataclass(frozen=True)
class Direction:
    """A refusal direction (or per-layer directions, or per-layer subspaces) with provenance.

    Attributes:
        vector: ``(d_model,)`` for ``kind="single"`` (the raw difference of means, not normalised),
            ``(n_layers, d_model)`` for ``"per_layer"``, ``(n_layers, k, d_model)`` for ``"subspace"``.
        kind: one of ``single``, ``per_layer``, ``subspace``.
        model_id: the model it was computed on.
        n_layers, d_model: that model's shape (checked on use).
        layer: the selected layer (single directions), else None.
        position: the selected post-instruction position as a negative offset (-1 = last token).
        site: the hook name it was read at (``blocks.{layer}.hook_resid_pre``).
        metadata: anything else worth keeping (data hashes, selection scores, refusal tokens).
        model_path: where ``model_id`` is a local folder, its absolute path (written by :meth:`save`), so the
            model is recognised however it is named later (relative to another folder, or absolute).
    """

    vector: Tensor
    kind: str
    model_id: str
    n_layers: int
    d_model: int
    layer: "int | None" = None
    position: "int | None" = None
    site: "str | None" = None
    metadata: dict[str, Any] = field(default_factory=dict)
    model_path: "str | None" = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Direction kind must be one of {KINDS}, got {self.kind!r}")
        want = {"single": 1, "per_layer": 2, "subspace": 3}[self.kind]
        if self.vector.ndim != want or self.vector.shape[-1] != self.d_model:
            raise ValueError(
                f"a {self.kind} direction needs {want} axes ending in d_model={self.d_model}, "
                f"got shape {tuple(self.vector.shape)}"
            )

    @property
    def unit(self) -> Float[Tensor, "... d_model"]:
        return self.vector / self.vector.norm(dim=-1, keepdim=True)

    def check_model(self, model: Any) -> None:
        """Raise :class:`DirectionMismatchError` if this direction cannot be used on ``model``."""
        where = f" (site {self.site})" if self.site else ""
        if self.d_model != model.d_model:
            raise DirectionMismatchError(
                f"direction has d_model {self.d_model} but the model {model.model_id!r} has {model.d_model}{where}; "
                f"it was computed on {self.model_id!r}, a model of another width"
            )
        if self.n_layers != model.n_layers:
            raise DirectionMismatchError(
                f"direction was computed on {self.model_id!r} with {self.n_layers} layers but "
                f"{model.model_id!r} has {model.n_layers}{where}; use a direction from this model family"
            )
        if self.layer is not None and not 0 <= self.layer < model.n_layers:
            raise DirectionMismatchError(
                f"direction is at layer {self.layer}{where} but {model.model_id!r} has layers 0..{model.n_layers - 1}; "
                "was its direction.json edited?"
            )
        from drtk.models.loading import related, same_place

        names = [self.model_id, *([self.model_path] if self.model_path else [])]
        if any(same_place(name, model.model_id) for name in names):
            return
        if any(related(name, model.model_id) for name in names):
            logger.info("using a direction from %r on %r (transfer)", self.model_id, model.model_id)
        else:
            logger.warning("using a direction from %r on %r, which as far as drtk's training records tell are "
                           "unrelated models: it fits their shapes, but a direction means nothing on a model that "
                           "does not share its origin", self.model_id, model.model_id)

    def for_model(self, model: Any) -> Tensor:
        """The tensor, checked against ``model`` and moved to its device."""
        self.check_model(model)
        return self.vector.to(model.device)

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "model_id": self.model_id, "n_layers": self.n_layers, "d_model": self.d_model,
            "layer": self.layer, "position": self.position, "site": self.site,
            "shape": list(self.vector.shape), "metadata": self.metadata,
        } | ({"model_path": self.model_path} if self.model_path else {})

    def save(self, path: "str | Path") -> Path:
        """Write ``path`` (``.safetensors``) and its ``.json`` sidecar; returns the tensor path."""
        from safetensors.torch import save_file

        from drtk import __version__
        from drtk.models.loading import local_path

        path = Path(path).with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"direction": self.vector.detach().float().cpu().contiguous()}, str(path))
        recorded = self if self.model_path else replace(self, model_path=local_path(self.model_id))
        meta = recorded.to_dict() | {"drtk_version": __version__}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: "str | Path") -> "Direction":
        """Read a direction written by :meth:`save` (a ``.safetensors`` path, its ``.json``, or a folder
        holding ``direction.safetensors``)."""
        from safetensors.torch import load_file

        path = Path(path)
        if path.is_dir():
            path = path / "direction.safetensors"
        path = path.with_suffix(".safetensors")
        sidecar = path.with_suffix(".json")
        if not path.exists() or not sidecar.exists():
            raise DataError(f"no direction at {path} (needs {path.name} and {sidecar.name}); run `drtk directions`")
        meta = json.loads(sidecar.read_text())
        vector = load_file(str(path))["direction"]
        return cls(
            vector=vector, kind=meta["kind"], model_id=meta["model_id"], n_layers=int(meta["n_layers"]),
            d_model=int(meta["d_model"]), layer=meta.get("layer"), position=meta.get("position"),
            site=meta.get("site"), metadata=meta.get("metadata", {}),
            model_path=meta.get("model_path") or _saved_beside(meta["model_id"], sidecar),
        )

    def with_metadata(self, **extra: Any) -> "Direction":
        return replace(self, metadata=self.metadata | extra)


def _saved_beside(model_id: str, sidecar: Path) -> "str | None":
    """Where a direction file records no ``model_path`` (written before drtk kept one) and its relative
    ``model_id`` names nothing from here: the model folder it names from one of the file's parent folders,
    where it was saved from (``runs/demo/aligned/model`` beside ``runs/demo/direction``), as an absolute path."""
    if Path(model_id).is_absolute() or Path(model_id).exists():
        return None
    for folder in sidecar.resolve().parents:
        if (folder / model_id / "config.json").is_file():
            return str((folder / model_id).resolve())
    return None
