"""FratMAE (Oh et al. 2025) as a :class:`petctfm.train.task.TrainTask`; read top to bottom.

1. **Input**: a whole-body stack ``image`` (B, 2, X, Y, Z) [PET, CT], normalized (:mod:`.stacks`), cut into
   ``p``^3 patches: N tokens per modality on the grid ``(X/p, Y/p, Z/p)`` (gpu preset: 160 x 32 x 192,
   p = 16 -> 10 x 2 x 12 = 240 tokens).
2. **Asymmetric cross-modal masking**: per sample the loader draws the masked modality ``S`` (``target``,
   0 = PET, 1 = CT) and a token permutation ``perm``; the first ``n_keep = N - round(ratio * N)`` tokens of
   ``perm`` stay visible (ratio 0.5: exactly half of S's tokens masked). ``mask.mode = "drop"`` (default,
   MAE's): only visible tokens enter S's encoder. ``mask.mode = "zero"`` (the paper's Eq. 1,
   ``Z_S = E_S(X_S * M_S)``): the voxels of S's masked patches are set to 0 and all N tokens enter S's
   encoder, in grid order; the decoder then needs no mask tokens. The other modality is complete.
3. **Twin encoders** (:class:`~.vit.ViTEncoder`, weights not shared): ``E_PET`` (with a CLS token) and
   ``E_CT``. The batch is split by ``S``: for the PET-masked samples ``Z_PET = E_PET(visible PET)``,
   ``Z_CT = E_CT(all CT)``, and the other way round for the CT-masked ones.
4. **Cross-attention decoders** (:class:`Decoder`, one per modality): S's encoded visible tokens with mask
   tokens inserted at the masked positions (plus positions) are the queries; the other modality's encoder
   output (patch tokens, plus positions) gives keys and values; each block is self-attention, cross-attention,
   MLP. A linear head predicts the ``p``^3 voxels of every token of S.
5. **Loss**: MSE on S's masked patches only (:func:`masked_mse`; ``loss.norm_pix``: each target patch
   normalized to zero mean / unit variance, MAE's option), plus ``lambda * InfoNCE`` between the PET CLS
   token and the metadata text (:mod:`.context`, ``context_align.enabled``).

Ablations (the paper's Table 3), ``model.arch`` x ``context_align.enabled`` (:data:`VARIANTS`): ``mae``: one
ViT over both channels (2-channel patch embedding, CLS token), the MAE decoder (self-attention only), loss on
the masked patches of both channels, the same random tokens masked in PET and CT; ``mae+ca``; ``fratmae-noca``;
``fratmae``.

Model output (:meth:`FratMAE.forward`): ``pred`` (B, N, p^3 * c) (c = 1 for FratMAE: modality S of each
sample; c = 2 for MAE), ``mask`` (B, N) bool (True = masked), ``cls`` (B, D) PET (or joint) CLS, and with
ContextAlign and ``text`` given ``img_emb`` / ``txt_emb`` (B, P) and ``logit_scale`` ().
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from petctfm.core.config import build_config
from petctfm.core.device import unwrap_model
from petctfm.core.errors import InputError
from petctfm.data.loader import bind_dataset, patch_loader
from petctfm.methods.early_fusion_mae.mae import save_figure
from petctfm.methods.fratmae.config import CONFIG, METHOD, FratMAEConfig
from petctfm.methods.fratmae.context import TextEncoder, Vocabulary, global_info_nce, text_length
from petctfm.methods.fratmae.stacks import StackConfig, StackDataset
from petctfm.methods.fratmae.vit import Block, TwinViT, init_weights, patchify, sincos_3d, token_grid, unpatchify

MODALITIES = ("pet", "ct")
#: Table 3 rows -> (model.arch, context_align.enabled)
VARIANTS = {"mae": ("mae", False), "mae+ca": ("mae", True), "fratmae-noca": ("fratmae", False),
            "fratmae": ("fratmae", True)}

# ------------------------------------------------------------------------------------------------ config

# The typed config (sections, allowed values, cross-field checks) is in config.py.
DEFAULT_CONFIG: dict[str, Any] = CONFIG().to_dict()


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check a full config dict against :data:`CONFIG`; fills ``context_align.vocab`` with the default
    vocabulary when unset; returns it, normalized in place. One-line ConfigErrors (UsageError, exit 2)."""
    cfg.update(build_config(CONFIG, cfg).to_dict())
    return cfg


def n_tokens(cfg: dict[str, Any]) -> int:
    return math.prod(token_grid(StackConfig.from_dict(cfg["data"]).stack_shape(), int(cfg["model"]["patch"])))


def n_visible(n: int, ratio: float) -> int:
    """Tokens left visible when ``round(ratio * n)`` are masked."""
    return n - int(round(ratio * n))


# ------------------------------------------------------------------------------------------------ masking


def token_mask(perm: torch.Tensor, n_keep: int) -> torch.Tensor:
    """(B, N) bool, True = masked: every token after the first ``n_keep`` of ``perm`` (B, N)."""
    mask = torch.zeros(perm.shape, dtype=torch.bool, device=perm.device)
    return mask.scatter(1, perm[:, n_keep:], True)


def zero_masked(x: torch.Tensor, mask: torch.Tensor, patch: int, grid) -> torch.Tensor:
    """The paper's Eq. 1 input ``X * M``: ``x`` (b, c, X, Y, Z) with the voxels of every masked token (``mask``
    (b, N) bool, True = masked) set to 0 (every channel of ``x``)."""
    keep = (~mask).to(x.dtype)[..., None].expand(-1, -1, patch**3)
    return x * unpatchify(keep, patch, grid, 1)  # (b, 1, X, Y, Z), broadcast over the channels


# ------------------------------------------------------------------------------------------------ decoder


class Decoder(nn.Module):
    """MAE decoder; with ``cross`` every block also cross-attends to the other modality.

    ``forward(z (b, n_keep, E) visible tokens in ``perm`` order, perm (b, N), other (b, N, E) or None)
    -> (b, N, out)``: embed to ``dim``, append mask tokens, un-shuffle to grid order, add positions, blocks,
    LayerNorm, linear head. With all N tokens (Eq. 1 masking: ``z`` in grid order, ``perm`` the identity) no mask
    token is appended.
    """

    def __init__(self, enc_dim: int, dim: int, depth: int, heads: int, grid, out: int, cross: bool):
        super().__init__()
        self.embed = nn.Linear(enc_dim, dim)
        self.kv_embed = nn.Linear(enc_dim, dim) if cross else None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos", sincos_3d(grid, dim)[None], persistent=False)
        self.blocks = nn.ModuleList([Block(dim, heads, cross=cross) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out)
        init_weights(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, z: torch.Tensor, perm: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        q = self.embed(z)
        b, n = perm.shape
        if q.shape[1] < n:
            q = torch.cat([q, self.mask_token.to(q.dtype).expand(b, n - q.shape[1], -1)], 1)
        else:  # every token given (Eq. 1 masking): no mask token; kept in the graph for DDP at zero cost
            q = q + 0.0 * self.mask_token.to(q.dtype)
        restore = torch.argsort(perm, dim=1)
        q = torch.gather(q, 1, restore[..., None].expand(-1, -1, q.shape[-1])) + self.pos.to(q.dtype)
        kv = None if self.kv_embed is None else self.kv_embed(other) + self.pos.to(q.dtype)
        for blk in self.blocks:
            q = blk(q, kv)
        return self.head(self.norm(q))


# ------------------------------------------------------------------------------------------------ model


class FratMAE(nn.Module):
    """Twin ViT encoders + cross-attention decoders (``arch="fratmae"``) or one 2-channel ViT + MAE decoder
    (``arch="mae"``), with the optional ContextAlign text branch. See the module docstring for ``forward``."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        m, ca = cfg["model"], cfg["context_align"]
        data = StackConfig.from_dict(cfg["data"])
        self.arch, self.patch = m["arch"], int(m["patch"])
        self.grid = token_grid(data.stack_shape(), self.patch)
        self.n_tokens = math.prod(self.grid)
        self.n_keep = n_visible(self.n_tokens, float(cfg["mask"]["ratio"]))
        self.mask_mode = str(cfg["mask"].get("mode", "drop"))  # saved configs before the option: drop
        dec = dict(enc_dim=int(m["dim"]), dim=int(m["decoder_dim"]), depth=int(m["decoder_depth"]),
                   heads=int(m["decoder_heads"]), grid=self.grid)
        self.backbone = TwinViT(self.arch, self.grid, self.patch, int(m["dim"]), int(m["depth"]), int(m["heads"]))
        if self.arch == "fratmae":
            self.decoders = nn.ModuleDict({k: Decoder(out=self.patch**3, cross=True, **dec) for k in MODALITIES})
        else:
            self.decoders = nn.ModuleDict({"joint": Decoder(out=2 * self.patch**3, cross=False, **dec)})
        self.context_align = bool(ca["enabled"])
        if self.context_align:
            length = text_length(ca.get("tokenizer") or "field")  # saved configs before the option: field
            self.text_encoder = TextEncoder(len(ca["vocab"]), int(ca["dim"]), int(ca["depth"]), int(ca["heads"]), length)
            self.img_proj = nn.Linear(int(m["dim"]), int(ca["proj_dim"]))
            self.txt_proj = nn.Linear(int(ca["dim"]), int(ca["proj_dim"]))
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / float(ca["tau_init"]))))

    @property
    def encoders(self) -> nn.ModuleDict:
        """``backbone.encoders``: ``pet`` and ``ct`` (FratMAE) or ``joint`` (MAE)."""
        return self.backbone.encoders

    def forward(self, image: torch.Tensor, target: torch.Tensor, perm: torch.Tensor,
                text: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        mask = token_mask(perm, self.n_keep)
        keep = perm[:, : self.n_keep]
        image_o, dec_perm = image, perm  # image_o: the other modality's input, always complete
        if self.mask_mode == "zero":  # Eq. 1: masked patches zeroed, every token in grid order enters S's encoder
            image = zero_masked(image, mask, self.patch, self.grid)
            keep, dec_perm = None, torch.arange(self.n_tokens, device=perm.device).expand(perm.shape[0], -1)
        if self.arch == "mae":
            z = self.encoders["joint"](image, keep)
            cls, pred = z[:, 0], self.decoders["joint"](z[:, 1:], dec_perm)
        else:
            pred = image.new_zeros(image.shape[0], self.n_tokens, self.patch**3)
            cls = image.new_zeros(image.shape[0], self.encoders["pet"].dim)
            for s, name in enumerate(MODALITIES):
                other = MODALITIES[1 - s]
                idx = (target == s).nonzero().squeeze(1)
                if idx.numel() == 0:  # keep every parameter in the graph (DDP) at zero cost to the loss
                    pred = pred + 0.0 * sum(p.sum() for p in self.decoders[name].parameters())
                    continue
                # drop: visible tokens only; zero: every token of the zeroed input
                z_s = self.encoders[name](image[idx, s:s + 1], None if keep is None else keep[idx])
                z_o = self.encoders[other](image_o[idx, 1 - s:2 - s])  # the complete other modality
                z_pet = z_s if name == "pet" else z_o
                cls = cls.index_copy(0, idx, z_pet[:, 0].to(cls.dtype))
                z_s, z_o = (z_s[:, 1:], z_o) if name == "pet" else (z_s, z_o[:, 1:])
                pred = pred.index_copy(0, idx, self.decoders[name](z_s, dec_perm[idx], z_o).to(pred.dtype))
        out = {"pred": pred, "mask": mask, "cls": cls}
        if self.context_align and text is not None:
            out.update(img_emb=self.img_proj(cls), txt_emb=self.txt_proj(self.text_encoder(text)),
                       logit_scale=self.logit_scale)
        return out

    def targets(self, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """What ``pred`` reconstructs: (B, N, p^3) patches of each sample's S (FratMAE) or (B, N, p^3 * 2)."""
        if self.arch == "mae":
            return patchify(image, self.patch)
        both = torch.stack([patchify(image[:, c:c + 1], self.patch) for c in range(2)], 1)  # (B, 2, N, p^3)
        return both[torch.arange(image.shape[0], device=image.device), target]

    def reconstruct(self, image: torch.Tensor, target: torch.Tensor, perm: torch.Tensor,
                    norm_pix: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked input, reconstruction), both (B, c, X, Y, Z): visible patches pasted from the input,
        masked ones predicted (de-normalized with the true patch statistics under ``norm_pix``)."""
        out = self.forward(image, target, perm)
        tgt, pred, m = self.targets(image, target), out["pred"].float(), out["mask"][..., None]
        c = 2 if self.arch == "mae" else 1
        if norm_pix:
            t = tgt.reshape(*tgt.shape[:2], -1, c)
            mean, std = t.mean(2, keepdim=True), (t.var(2, keepdim=True) + 1e-6).sqrt()
            pred = (pred.reshape(t.shape) * std + mean).reshape(tgt.shape)
        recon = torch.where(m, pred, tgt)
        masked = tgt.masked_fill(m, 0.0)
        shape = (self.patch, self.grid, c)
        return unpatchify(masked, *shape), unpatchify(recon, *shape)


def build_model(cfg: dict[str, Any]) -> FratMAE:
    """The model a config describes (what ``load_model`` calls to rebuild a checkpoint)."""
    return FratMAE(cfg)


# ------------------------------------------------------------------------------------------------ loss


def normalize_patches(t: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, N, p^3 * c) -> each patch and channel to zero mean, unit variance (MAE's ``norm_pix_loss``)."""
    x = t.reshape(*t.shape[:2], -1, channels)
    x = (x - x.mean(2, keepdim=True)) / (x.var(2, keepdim=True) + 1e-6).sqrt()
    return x.reshape(t.shape)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked tokens of the per-token mean squared error, fp32. pred, target (B, N, P); mask (B, N)."""
    err = (pred.float() - target.float()).square().mean(-1)
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp_min(1)


def fratmae_loss(model: FratMAE, out: dict[str, torch.Tensor], image: torch.Tensor, target: torch.Tensor,
                 text: torch.Tensor | None, cfg: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    """``recon + lambda * InfoNCE`` and logs (``recon``, ``recon_pet`` / ``recon_ct``, ``info_nce``,
    ``retrieval_acc``, ``tau``; 0-d tensors). The same keys every step (DDP reduces them as one list);
    ``recon_<m>`` is NaN on a step where no sample masks modality m."""
    c = 2 if model.arch == "mae" else 1
    tgt = model.targets(image, target)
    if cfg["loss"]["norm_pix"]:
        tgt = normalize_patches(tgt, c)
    pred, mask = out["pred"], out["mask"]
    recon = masked_mse(pred, tgt, mask)
    logs: dict[str, Any] = {"recon": recon.detach()}
    if model.arch == "mae":
        p, t = pred.reshape(*pred.shape[:2], -1, 2), tgt.reshape(*tgt.shape[:2], -1, 2)
        for ch, name in enumerate(MODALITIES):
            logs[f"recon_{name}"] = masked_mse(p[..., ch], t[..., ch], mask).detach()
    else:
        for s, name in enumerate(MODALITIES):
            sel = (target == s)[:, None] & mask  # NaN when no sample of the batch masks this modality
            logs[f"recon_{name}"] = masked_mse(pred, tgt, sel).detach() if bool(sel.any()) else torch.tensor(float("nan"))
    loss = recon
    if model.context_align:
        nce, nce_logs = global_info_nce(out["img_emb"], out["txt_emb"], text, out["logit_scale"])  # all ranks' rows
        loss = loss + float(cfg["context_align"]["weight"]) * nce
        logs.update(info_nce=nce.detach(), **nce_logs)
    return loss, logs


# ------------------------------------------------------------------------------------------------ task


class FratMAETask:
    """FratMAE as a TrainTask; ``config`` (a dict or a :class:`~.config.FratMAEConfig`) holds the model,
    masking, loss, ContextAlign (with its vocabulary), stack stream and preprocessing. ``self.cfg`` is the typed
    config the task reads; ``self.config`` its dict form, saved with the run and in every checkpoint."""

    def __init__(self, config: dict[str, Any] | FratMAEConfig, dataset: str | Path | None = None):
        if isinstance(config, FratMAEConfig):
            config = config.to_dict()
        self.config, _ = bind_dataset(config, dataset, validate_config)
        self.cfg = CONFIG.from_dict(self.config)
        self.data_cfg = self.cfg.data  # a StackConfig

    def build_model(self) -> nn.Module:
        return build_model(self.config)

    def dataset(self, rank: int = 0) -> StackDataset:
        if not self.cfg.dataset:
            raise InputError("no dataset given (config 'dataset' or --data)")
        return StackDataset(self.cfg.dataset, self.data_cfg, n_tokens(self.config), self.cfg.mask.ratio,
                            Vocabulary(self.cfg.context_align.vocab), seed=self.cfg.seed, rank=rank,
                            tokenizer=self.cfg.context_align.tokenizer)

    def batches(self, rank: int, world_size: int, start_sample: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of :class:`~.stacks.StackDataset` items: image (B, 2, X, Y, Z), target (B,), perm (B, N),
        text (B, text length), index (B,)."""
        return iter(patch_loader(self.dataset(rank), start_sample=start_sample))

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        out = model(batch["image"], batch["target"], batch["perm"], batch["text"])
        return fratmae_loss(unwrap_model(model), out, batch["image"], batch["target"], batch["text"], self.config)

    @torch.no_grad()
    def on_checkpoint(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int, run_dir: Path) -> None:
        """Figure: coronal view (middle y) of one sample's PET and CT: input, masked input, reconstruction
        (FratMAE: each modality shown as the masked one, the other complete)."""
        m = unwrap_model(model)
        was_training = m.training
        m.eval()
        try:
            x, perm = batch["image"][:1], batch["perm"][:1]
            norm_pix = self.cfg.loss.norm_pix
            if m.arch == "mae":
                x_in, rec = m.reconstruct(x, batch["target"][:1], perm, norm_pix)
            else:
                parts = [m.reconstruct(x, torch.tensor([s], device=x.device), perm, norm_pix) for s in range(2)]
                x_in, rec = torch.cat([parts[0][0], parts[1][0]], 1), torch.cat([parts[0][1], parts[1][1]], 1)
        finally:
            m.train(was_training)
        save_figure(x[0], x_in[0], rec[0], ["PET", "CT"], Path(run_dir) / "figures" / f"recon_step{step:07d}.png",
                    title=f"step {step} ({m.arch}, {self.data_cfg.stack} stack)")


__all__ = ["METHOD", "MODALITIES", "VARIANTS", "DEFAULT_CONFIG", "validate_config", "n_tokens", "n_visible",
           "token_mask", "zero_masked", "Decoder", "FratMAE", "build_model", "normalize_patches", "masked_mse", "fratmae_loss",
           "FratMAETask"]
