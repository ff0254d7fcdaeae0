"""Cross-GPU InfoNCE: with world size 1 the gather is the identity; with 2 gloo processes (CPU) every rank's
global loss equals the single-process loss on the whole batch, and after DDP's averaging of the ranks'
parameter gradients these are exactly the single-process ones."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from petctfm.methods.fratmae.context import gather_batch, global_info_nce, info_nce, positives

TEXT = torch.tensor([[1, 2], [1, 3], [1, 2], [4, 4]])  # rows 0 and 2 share metadata: positives across ranks


def _model(rows: slice):
    """Embeddings of batch rows ``rows`` through two shared projection matrices, and the parameters."""
    g = torch.Generator().manual_seed(0)
    x_img, x_txt = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    w_img, w_txt = torch.randn(5, 6, generator=g).requires_grad_(), torch.randn(5, 6, generator=g).requires_grad_()
    scale = torch.tensor(2.0, requires_grad=True)
    return x_img[rows] @ w_img, x_txt[rows] @ w_txt, TEXT[rows], [w_img, w_txt, scale]


def test_world_size_one_is_the_plain_loss():
    img, txt, text, params = _model(slice(0, 4))
    assert gather_batch(img) is img
    a, _ = global_info_nce(img, txt, text, params[2])
    b, _ = info_nce(img, txt, positives(text), params[2])
    assert torch.equal(a, b)


def _worker(rank: int, path: str, q) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    try:
        img, txt, text, params = _model(slice(2 * rank, 2 * rank + 2))
        loss, _ = global_info_nce(img, txt, text, params[2])
        loss.backward()
        grads = [p.grad for p in params]
        for gr in grads:  # what DDP does to parameter gradients: the mean over ranks
            dist.all_reduce(gr)
            gr /= 2
        # plain arrays (pickled by value): torch's shared-memory tensors would die with this process
        q.put((rank, loss.detach().numpy(), [g.numpy() for g in grads]))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path):
    img, txt, text, params = _model(slice(0, 4))
    loss, _ = info_nce(img, txt, positives(text), params[2])
    loss.backward()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, str(tmp_path / "store"), q)) for r in range(2)]
    for p in procs:
        p.start()
    out = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    assert sorted(r for r, _, _ in out) == [0, 1]
    for _, loss_r, grads in out:
        torch.testing.assert_close(torch.from_numpy(loss_r), loss.detach())
        for got, want in zip(grads, params):
            torch.testing.assert_close(torch.from_numpy(got), want.grad)
