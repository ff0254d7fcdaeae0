"""Promptable segmentation training (``petctfm prompt-train``) as a TrainTask.

1. **Targets** (:class:`PromptPatchDataset`): from the harmonized dataset, every organ of ``organs.npy``
   except the held-out classes (``targets.held_out``, default spleen and both kidneys: never sampled, kept
   for zero-shot evaluation), every lesion (18-connected component of ``label.npy``), and "all lesions in
   view". Item ``i`` is a pure function of ``(seed, rank, i)``: case -> target kind (``targets.kind_probs``,
   renormalized over the kinds the case has) -> target -> a patch centred on the target's bounding box,
   jittered by up to a quarter patch (training crops may use the ground truth; at inference the crop follows
   the prompts, ``session.py``) -> the first prompt: a positive click at the target's interior point
   (maximum of the distance transform) and, with ``clicks.box_prob``, a jittered 3D box. Cases: the split's, less
   those that fail ``targets.train_filter`` (``manifest.csv`` filters, :mod:`petctfm.data.filters`; the val
   split's fixed targets are filtered the same way, so the best checkpoint is chosen in distribution).
2. **Iterative click simulation** (:meth:`PromptTask.training_step`): ``n_iter`` in [0, ``clicks.max_iter``]
   rounds without gradient, each predicting, feeding the prediction back as the previous-mask channel and
   adding one corrective click on the largest error region (:func:`~.prompts.corrective_click`); with
   ``clicks.mask_only_prob`` the last round adds no click (the mask-only step of SAM / SegAnyPET). Then one
   forward with gradient and the loss: MONAI ``DiceCELoss(sigmoid=True, batch=True)`` (``cached`` /
   ``channels``), or for ``sam`` SAM's scheme (:func:`~.sam.sam_loss`: MONAI's ``DiceFocalLoss`` 1 : 1 per mask
   by default, ``model.sam.loss``, on the best candidate of a one-click prompt, else on the single mask, + MSE of the
   predicted IoU). The ``sam`` design also gets the clicks
   and box as sparse prompts (items ``points`` / ``labels``; each simulated click is appended), the exact
   positions the dense channels draw.
4. **Class prompts** (``model.class_prompts``): each item's ``cls`` is its target's class index in
   ``model.classes`` (lesion, all_lesions, the organ's name; held-out organs are never sampled and have no
   class), replaced by 0 ("no class") with probability ``targets.class_dropout`` (drawn last, so the rest of
   the item is the same as without class prompts).
5. **Figures and the best checkpoint** (:meth:`PromptTask.on_checkpoint`): the batch's first target segmented
   with 1..3 simulated clicks, drawn on the coronal slice; then :data:`VAL_TARGETS` fixed targets of the
   **val split** (items 0, 1, ... of a val-split dataset: the same targets at every step) segmented with
   :data:`VAL_CLICKS` simulated clicks. Their mean Dice is the validation score: ``RUN/val.jsonl`` gets it
   (``val_dice``, with the figure's ``dice_per_click``) and ``RUN/best/`` keeps the checkpoint with the highest
   (:func:`petctfm.train.checkpoint.keep_best`, the owner fine-tuning uses too), which ``PromptSession.from_run``
   and ``petctfm serve`` load. A dataset without a non-empty val split keeps no ``best/`` (logged once).

Shapes: image (B, C, p, p, p) normalized; target (B, 1, p, p, p) float {0, 1}; prompts (B, 4, p, p, p);
``sam``: points (B, N, 3) float patch indices, labels (B, N) int64 (:mod:`.sam`); cls (B,) int64.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from petctfm.core.config import build_config
from petctfm.core.errors import InputError
from petctfm.core.labels import ORGAN_LABELS
from petctfm.data import format as fmt
from petctfm.data.filters import select_cases
from petctfm.data.loader import MODES, PatchConfig, PatchDataset, bind_dataset, list_cases, patch_loader
from petctfm.methods.promptable import prompts as P
from petctfm.methods.promptable import sam as S
from petctfm.methods.promptable.config import CONFIG, KINDS, PromptConfig
from petctfm.methods.promptable.model import build_model, class_table, load_pretrained_encoder

VAL_FILE = "val.jsonl"
VAL_TARGETS = 8  # fixed val-split targets scored at each checkpoint hook (the best/ checkpoint's score)
VAL_CLICKS = 3  # simulated clicks per validation target (the Dice after the last one counts)
log = logging.getLogger(__name__)
# The typed config (sections, allowed values, cross-field checks) is in config.py.
DEFAULT_CONFIG: dict[str, Any] = CONFIG().to_dict()


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check a full config dict against :data:`CONFIG`; returns it, normalized in place. One-line ConfigErrors
    (UsageError, exit 2)."""
    cfg.update(build_config(CONFIG, cfg).to_dict())
    return cfg


def held_out_values(cfg: dict[str, Any]) -> set[int]:
    return {ORGAN_LABELS[n] for n in cfg["targets"]["held_out"]}


FIRST_SLOTS = S.BOX_SLOTS + 1  # sparse prompt slots of a training item: the box's 2 slots + the first click
ORGAN_NAMES = {v: k for k, v in ORGAN_LABELS.items()}


class PromptPatchDataset(PatchDataset):
    """Items ``{"image" (C,p,p,p), "target" (1,p,p,p), "prompts" (4,p,p,p), "n_iter", "mask_only", "index"}``;
    design ``sam`` adds ``"points"`` (3, 3) float and ``"labels"`` (3,) int64 (:func:`~.sam.sparse_array`: the
    two box slots, padding without a box, then the first click; all padding when the target is out of view),
    class prompts add ``"cls"`` () int64."""

    def __init__(self, config: dict[str, Any], rank: int = 0):
        cfg = PatchConfig.from_dict(config["data"])
        super().__init__(config["dataset"], cfg, seed=int(config["seed"]), rank=rank)
        self.config = config
        # only the cases that pass targets.train_filter (manifest.csv columns; the out-of-distribution protocol)
        self.case_ids = select_cases(self.root, list_cases(self.root, cfg.split),
                                     config["targets"].get("train_filter") or [], "targets.train_filter",
                                     f"split {cfg.split!r}")
        self.held_out = held_out_values(config)
        self.sparse = config["model"].get("design") == "sam"
        self.classes = class_table(config)
        self._targets: dict[str, tuple[np.ndarray, list[int], np.ndarray | None]] = {}

    def targets(self, case_id: str) -> tuple[np.ndarray, list[int], np.ndarray | None]:
        """(lesion component map (X, Y, Z) uint32, allowed organ values, organ map or None), once per case."""
        import cc3d

        if case_id not in self._targets:
            case = fmt.load_case(self.root, case_id)
            comps = cc3d.connected_components(np.ascontiguousarray(case["label"] > 0, np.uint8), connectivity=18)
            organs = np.asarray(case["organs"]) if "organs" in case else None
            values = [] if organs is None else [int(v) for v in np.unique(organs) if v and int(v) not in self.held_out]
            self._targets[case_id] = (comps, values, organs)
        return self._targets[case_id]

    def pick(self, rng: np.random.Generator) -> tuple[str, str, np.ndarray]:
        """(case id, kind, target mask (X, Y, Z) bool) drawn from ``rng``."""
        probs = self.config["targets"]["kind_probs"]
        for _ in range(100):
            case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
            comps, organ_values, organs = self.targets(case_id)
            n_les = int(comps.max())
            have = {"lesion": n_les > 0, "organ": bool(organ_values), "all_lesions": n_les > 0}
            w = np.array([float(probs.get(k, 0)) * have[k] for k in KINDS])
            if w.sum() <= 0:
                continue
            kind = KINDS[int(rng.choice(len(KINDS), p=w / w.sum()))]
            if kind == "lesion":
                return case_id, kind, comps == int(rng.integers(1, n_les + 1))
            if kind == "organ":
                return case_id, kind, organs == organ_values[int(rng.integers(len(organ_values)))]
            return case_id, kind, comps > 0
        raise InputError(f"{self.root}: no case in split {self.cfg.split!r} has a lesion or a non-held-out organ")

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = self.rng(i)
        case_id, kind, target = self.pick(rng)
        cc = self.config["clicks"]
        p, shape = np.array(self.cfg.patch_size), np.array(target.shape)
        lo, hi = P.bounding_box(target)
        if kind == "all_lesions":  # centre on one lesion, the target is every lesion voxel in view
            pts = np.argwhere(target)
            lo = hi = pts[int(rng.integers(len(pts)))]
        centre = (lo + hi) / 2 + rng.uniform(-1, 1, 3) * p * float(cc["crop_jitter"])
        start = np.clip(np.rint(centre - p / 2).astype(int), 0, np.maximum(shape - p, 0))
        box = tuple(slice(int(a), int(b)) for a, b in zip(start, np.minimum(start + p, shape)))
        x, _ = self.cut(case_id, rng, label=False, box=box)
        t = self.pad_centred(target[box][None].astype(np.uint8), [0])[0].astype(bool)
        first, jb = None, None
        if not t.any():  # the jitter moved the target out of view: no prompt, empty target (a valid lesson too)
            prompts = np.zeros((P.N_PROMPT_CHANNELS, *p), np.float32)
        else:
            first = P.interior_point(t)
            jb = P.jittered_box(t, rng, float(cc["box_jitter"])) if rng.random() < float(cc["box_prob"]) else None
            prompts = P.encode_prompts(t.shape, [(first, True)], box=jb, click_radius=float(cc["click_radius"]))
        # the dataset's normalization with the configured PET transform (self.norm), as the session applies it
        x = fmt.apply_normalization(x, self.norm)[list(MODES[self.cfg.mode])]
        item = {"image": torch.from_numpy(np.ascontiguousarray(x)), "target": torch.from_numpy(t[None].astype(np.float32)),
                "prompts": torch.from_numpy(prompts), "n_iter": torch.tensor(int(rng.integers(int(cc["max_iter"]) + 1))),
                "mask_only": torch.tensor(bool(rng.random() < float(cc["mask_only_prob"]))), "index": torch.tensor(int(i))}
        if self.sparse:
            coords, labels = S.sparse_array([] if first is None else [(first, True)], jb, FIRST_SLOTS)
            item["points"], item["labels"] = torch.from_numpy(coords), torch.from_numpy(labels)
        if self.classes:  # drawn last: every draw above is the same as without class prompts
            name = kind if kind != "organ" else ORGAN_NAMES[int(np.asarray(self.targets(case_id)[2])[target][0])]
            k = self.classes.index(name) + 1 if name in self.classes else P.NO_CLASS
            if rng.random() < float(self.config["targets"].get("class_dropout", 0.5)):
                k = P.NO_CLASS
            item["cls"] = torch.tensor(k, dtype=torch.long)
        return item


def batch_sparse(batch: dict[str, torch.Tensor]) -> S.SparsePrompts | None:
    """The batch's sparse prompts (design ``sam``), None when it has none."""
    if "points" not in batch:
        return None
    return S.SparsePrompts(batch["points"].float(), batch["labels"].long())


def decode_kwargs(sparse: S.SparsePrompts | None, cls: torch.Tensor | None) -> dict[str, Any]:
    """The optional keywords of ``PromptSegmenter.decode``: only those that are set (a class-free ``cached`` or
    ``channels`` model is called exactly as before)."""
    return {k: v for k, v in (("sparse", sparse), ("cls", cls)) if v is not None}


def simulate_clicks(model: nn.Module, image: torch.Tensor, target: torch.Tensor, prompts: torch.Tensor, n_iter: int,
                    mask_only_last: bool = False, click_radius: float = 2.0,
                    history: list | None = None) -> torch.Tensor:
    """``n_iter`` rounds of predict -> previous mask -> corrective click, without gradient; returns the new prompts
    (B, 4, p, p, p). ``history`` (optional list) receives per round the predictions (B, p, p, p) bool (numpy)
    and the clicks ``[(point, positive) or None per sample]``. The image is embedded once (``model.embed``);
    each round runs only ``model.decode``, as a session does per click. :func:`simulate` with sparse prompts
    and classes."""
    return simulate(model, image, target, prompts, n_iter, mask_only_last, click_radius, history)[0]


def simulate(model: nn.Module, image: torch.Tensor, target: torch.Tensor, prompts: torch.Tensor, n_iter: int,
             mask_only_last: bool = False, click_radius: float = 2.0, history: list | None = None,
             sparse: S.SparsePrompts | None = None,
             cls: torch.Tensor | None = None) -> tuple[torch.Tensor, S.SparsePrompts | None]:
    """:func:`simulate_clicks` that also carries the sparse prompts (``sam``: each corrective click appended as
    one slot, padding for a sample without one) and the class (B,) to every decode; returns (prompts, sparse)."""
    prompts = prompts.clone()
    sparse = None if sparse is None else sparse.clone()
    net = getattr(model, "module", model)  # the model inside DistributedDataParallel
    with torch.no_grad():
        emb = net.embed(image) if n_iter else None
        for it in range(n_iter):
            pred = (net.decode(emb, prompts, **decode_kwargs(sparse, cls)) > 0)[:, 0].cpu().numpy()
            tgt = target[:, 0].cpu().numpy() > 0.5
            clicks = []
            for b in range(pred.shape[0]):
                prompts[b, P.PREV] = torch.from_numpy(pred[b].astype(np.float32)).to(prompts.device)
                click = None if (mask_only_last and it == n_iter - 1) else P.corrective_click(tgt[b], pred[b])
                if click is not None:
                    ch = P.POS if click[1] else P.NEG
                    ballm = P.ball(pred.shape[1:], click[0], click_radius)
                    prompts[b, ch][torch.from_numpy(ballm).to(prompts.device)] = 1.0
                clicks.append(click)
            if sparse is not None:
                coords = torch.tensor(np.array([np.zeros(3) if c is None else c[0] for c in clicks], np.float32))
                labels = torch.tensor([S.PAD if c is None else (S.POS if c[1] else S.NEG) for c in clicks])
                sparse = sparse.append(coords, labels)
            if history is not None:
                history.append((pred, clicks))
    return prompts, sparse


class PromptTask:
    """Promptable segmentation as a TrainTask. ``config``: a dict or a :class:`~.config.PromptConfig`;
    ``self.cfg`` is the typed config the task reads, ``self.config`` its dict form, saved beside the run and in
    every checkpoint."""

    def __init__(self, config: dict[str, Any] | PromptConfig, dataset: str | Path | None = None):
        if isinstance(config, PromptConfig):
            config = config.to_dict()
        cfg, info = bind_dataset(config, dataset, validate_config)
        if info is not None:
            cfg["preprocessing"]["harmonize"] = {"spacing": info.get("spacing"), "ct_window": info.get("ct_window")}
        if cfg["model"].get("class_prompts") and not cfg["model"].get("classes"):
            cfg["model"]["classes"] = class_table(cfg)  # the table travels with the run and every checkpoint
        self.config = cfg
        self.cfg = CONFIG.from_dict(cfg)
        self._loss = None
        self._sam_loss = None  # design sam: MONAI's loss per mask (model.sam.loss), built once
        self._val: list[dict[str, torch.Tensor]] | None = None  # the fixed validation targets, built once

    def build_model(self) -> nn.Module:
        """Fresh model; the pretrained encoder (inflated to the prompt channels) when ``init.source`` is a run."""
        model = build_model(self.config)
        if self.cfg.init.source != "scratch":
            from petctfm.methods.segmentation.task import pretrained_config

            pcfg, state, path = pretrained_config(self.cfg.init.source)
            if pcfg["model"]["backbone"] != self.cfg.model.backbone:
                raise InputError(f"{path}: pretrained backbone {pcfg['model']['backbone']!r} != "
                                 f"{self.cfg.model.backbone!r}")
            load_pretrained_encoder(model, state, pcfg["data"]["mode"], self.cfg.data.mode)
        return model

    def dataset(self, rank: int = 0) -> PromptPatchDataset:
        if not self.cfg.dataset:
            raise InputError("prompt-train needs a dataset (config 'dataset' or --data)")
        return PromptPatchDataset(self.config, rank=rank)

    def batches(self, rank: int, world_size: int, start_sample: int) -> Iterator[dict[str, torch.Tensor]]:
        return iter(patch_loader(self.dataset(rank), start_sample=start_sample))

    def loss_fn(self):
        if self._loss is None:
            from monai.losses import DiceCELoss

            self._loss = DiceCELoss(sigmoid=True, batch=True)
        return self._loss

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        n_iter = int(batch["n_iter"][0])  # one count per batch (the first sample's draw)
        cls = batch.get("cls")
        prompts, sparse = simulate(model, batch["image"], batch["target"], batch["prompts"], n_iter,
                                   bool(batch["mask_only"][0]), self.cfg.clicks.click_radius,
                                   sparse=batch_sparse(batch), cls=cls)
        if self.cfg.model.design == "sam":
            logits, iou = model(batch["image"], prompts, sparse=sparse, cls=cls, all_masks=True)
            amb = S.ambiguous(sparse, prompts[:, P.PREV:P.PREV + 1])
            if self._sam_loss is None:
                sc = self.cfg.model.sam
                self._sam_loss = S.mask_loss(sc)
            loss, parts = S.sam_loss(logits.float(), iou.float(), batch["target"], amb, self._sam_loss)
            return loss, {"n_iter": float(n_iter), **parts}
        logits = model(batch["image"], prompts, **decode_kwargs(None, cls))
        loss = self.loss_fn()(logits.float(), batch["target"])
        return loss, {"n_iter": float(n_iter)}

    @torch.no_grad()
    def on_checkpoint(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int, run_dir: Path) -> None:
        """Segment the batch's first target with 1..3 simulated clicks; figure + Dice per click in ``val.jsonl``."""
        from petctfm.evaluate.metrics import voxel_overlap
        from petctfm.io.atomic import atomic_write_text
        from petctfm.methods.promptable.figures import click_figure

        was = model.training
        model.eval()
        img, tgt = batch["image"][:1], batch["target"][:1]
        prompts = batch["prompts"][:1].clone()
        prompts[:, P.NEG:] = 0  # the first click only (drop the sampled box)
        sparse = batch_sparse({k: v[:1] for k, v in batch.items() if k in ("points", "labels")})
        history: list = []
        simulate(model, img, tgt, prompts, 3, click_radius=self.cfg.clicks.click_radius, history=history,
                 sparse=None if sparse is None else sparse.without_box(),
                 cls=batch["cls"][:1] if "cls" in batch else None)
        gt = tgt[0, 0].cpu().numpy() > 0.5
        dices = [voxel_overlap(pred[0], gt)["dice"] for pred, _ in history]
        click_figure(img[0, 0].cpu().numpy(), gt, history, Path(run_dir) / "figures" / f"clicks_step{step:07d}.png",
                     title=f"step {step}: Dice per click {', '.join(f'{d:.2f}' for d in dices)}")
        record: dict[str, Any] = {"step": step, "dice_per_click": dices}
        val = self.validation_dice(model)
        if val is not None:
            from petctfm.train.checkpoint import keep_best

            record["val_dice"] = val
            record["best"] = keep_best(model, self.config, run_dir, step, val,
                                       f"mean val Dice ({len(self._val or [])} val-split targets, {VAL_CLICKS} clicks)")
        path = Path(run_dir) / VAL_FILE
        old = path.read_text() if path.is_file() else ""
        atomic_write_text(path, old + json.dumps(record) + "\n")
        model.train(was)

    def validation_items(self) -> list[dict[str, torch.Tensor]]:
        """Up to :data:`VAL_TARGETS` items of the val split with a target in view (fixed: items 0, 1, ...)."""
        if self._val is None:
            self._val = []
            if self.cfg.dataset:
                cfg = copy.deepcopy(self.config)
                cfg["data"]["split"] = "val"
                try:
                    ds = PromptPatchDataset(cfg)
                except InputError as exc:
                    log.warning("no validation targets, so no best/ checkpoint: %s", exc)
                    return self._val
                for i in range(4 * VAL_TARGETS):
                    item = ds[i]
                    if item["target"].any():
                        self._val.append(item)
                    if len(self._val) == VAL_TARGETS:
                        break
        return self._val

    @torch.no_grad()
    def validation_dice(self, model: nn.Module) -> float | None:
        """Mean Dice of the validation targets after :data:`VAL_CLICKS` simulated clicks (first click at the
        target's interior point, then corrective clicks); None without validation targets."""
        from petctfm.evaluate.metrics import voxel_overlap

        from petctfm.train.progress import stop_requested

        items = self.validation_items()
        if not items or stop_requested():
            return None
        device = next(model.parameters()).device
        img = torch.stack([it["image"] for it in items]).to(device)
        tgt = torch.stack([it["target"] for it in items]).to(device)
        prompts = torch.stack([it["prompts"] for it in items]).to(device)
        prompts[:, P.NEG:] = 0  # the first click only (no box)
        stacked = {k: torch.stack([it[k] for it in items]).to(device) for k in ("points", "labels", "cls")
                   if k in items[0]}
        sparse = batch_sparse(stacked)
        history: list = []
        simulate(model, img, tgt, prompts, VAL_CLICKS, click_radius=self.cfg.clicks.click_radius, history=history,
                 sparse=None if sparse is None else sparse.without_box(), cls=stacked.get("cls"))
        pred, gt = history[-1][0], tgt[:, 0].cpu().numpy() > 0.5
        return float(np.mean([voxel_overlap(pred[b], gt[b])["dice"] for b in range(len(items))]))


__all__ = ["DEFAULT_CONFIG", "KINDS", "VAL_FILE", "VAL_TARGETS", "VAL_CLICKS", "validate_config", "held_out_values",
           "FIRST_SLOTS", "PromptPatchDataset", "batch_sparse", "decode_kwargs", "simulate_clicks", "simulate",
           "PromptTask"]
