"""Stacked training: a member trained in a stack is the network trained alone."""

from __future__ import annotations

import copy

import pytest
import torch

from flowbound import cache
from flowbound.book.trained import get_model
from flowbound.data import load_mnist
from flowbound.networks.architectures import Linear, OneHidden, STNClassifier
from flowbound.training.fit import TrainingError, fit
from flowbound.training.stacking import Stacked, fit_stacked, stacks_training
from flowbound.training.zoo import VARIANTS

STACKED = [v.name for v in VARIANTS.values() if v.make_stacked_loss is not None]
PLAN = {"epochs": 2, "batch_size": 50, "lr": 0.01}


def _data(n=600):
    x, y = load_mnist("train")
    return x[:n].double(), y[:n]


def _net(variant: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    arch = VARIANTS.named(variant).arch
    return (Linear() if arch == "linear" else OneHidden(784, 24, 10)).double()


def variant_settings(variant: str) -> dict:
    if variant == "sdp":
        return {"lambda": 0.05, "eps": 0.1, "lanczos_steps": 4, "refresh_tol": 1e-3, "seed": 0}
    if variant == "at":
        return {"lambda_r": 0.3, "tau": 0.05, "pool_every": 1, "pool_size": 40,
                "pool_steps": 4, "pool_batch": 1000, "seed": 0}  # fmt: skip
    if variant == "at_pgd":
        return {"eps": 0.1, "alpha": 0.02, "steps": 3}
    return {"lambda": 0.01} if variant in ("fro", "spe", "lin_fro") else {}


def _plan(variant: str) -> dict:
    # f_sdp's epoch-start refresh runs the mixing method to a tolerance: at epoch 2 the
    # weights already differ by rounding (1e-13) between the two paths, and where the
    # solver stops amplifies that to about 1e-6. Its one-epoch run (a refresh from equal
    # weights) is compared here; its later refreshes by the companion test, exactly.
    return {**PLAN, "epochs": 1} if variant == "sdp" else PLAN


def _alone(variant: str, seed: int, x, y) -> torch.nn.Module:
    v = VARIANTS.named(variant)
    net = _net(variant, seed)
    loss = v.loss_factory()(variant_settings(variant))
    fit(net, loss, x, y, seed=seed, progress=False, **_plan(variant))
    return net


def _stacked(variant: str, seeds: list[int], x, y, plan: dict | None = None) -> list:
    v = VARIANTS.named(variant)
    members = [_net(variant, s) for s in seeds]
    net = Stacked(members)
    loss = v.stacked_loss_factory()(variant_settings(variant))
    fit_stacked(net, loss, x, y, seeds=seeds, progress=False, **(plan or _plan(variant)))
    net.write_back(members)
    return members


@pytest.fixture
def same_arithmetic(request):
    """One BLAS thread for f_sdp's comparisons, restored after the test.

    A matrix product's sums are split by thread count, so a stack (one batched product
    over members) and a network alone (one product, both threads) round differently in
    the last bit. Most objectives carry that as rounding; f_sdp's duals are trained
    towards a degenerate top eigenvalue, whose eigenvector (4 warm-started Lanczos
    steps) amplifies a last-bit difference to 1e-8 in one step and 1e-5 in two epochs
    (measured with one thread on one side and two on the other). With one thread both
    paths do the same arithmetic and agree to 1e-13, companions bitwise."""
    if request.node.callspec.params.get("variant") != "sdp":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    return max(float((p - q).detach().abs().max()) for p, q in pairs)


def test_which_objectives_stack():
    assert {"nt", "fro", "spe", "lin_nt", "lin_fro", "at_pgd", "at", "sdp"} <= set(STACKED)
    # the per-digit certificate (data-dependent shapes) and an STN do not
    assert not {"cert", "stn"} & set(STACKED)


@pytest.mark.parametrize("variant", STACKED)
def test_a_member_equals_the_network_trained_alone(variant, mnist_dir, same_arithmetic):
    x, y = _data()
    members = _stacked(variant, [0, 1, 2], x, y)
    for seed, member in zip([0, 1, 2], members, strict=True):
        alone = _alone(variant, seed, x, y)
        moved = _max_diff(alone, _net(variant, seed))  # how far training took the weights
        assert moved > 1e-2
        assert _max_diff(member, alone) < 1e-9 * max(moved, 1.0)  # rounding only


@pytest.mark.parametrize("variant", ["spe", "at", "sdp"])
def test_a_member_does_not_depend_on_its_companions(variant, mnist_dir, same_arithmetic):
    x, y = _data()
    first = _stacked(variant, [3, 5], x, y, PLAN)[0]
    again = _stacked(variant, [3], x, y, PLAN)[0]
    swapped = _stacked(variant, [7, 3, 5], x, y, PLAN)[1]
    assert _max_diff(first, again) < 1e-12
    assert _max_diff(first, swapped) < 1e-12


def test_a_diverging_member_is_named(mnist_dir):
    x, y = _data(200)
    members = [_net("nt", s) for s in (0, 1)]
    with torch.no_grad():
        members[1].V.weight.fill_(float("nan"))
    net = Stacked(members)
    loss = VARIANTS.named("nt").stacked_loss_factory()({})
    with pytest.raises(TrainingError, match=r"member 1 \(seed 4\).*epoch 1, batch 1"):
        fit_stacked(net, loss, x, y, seeds=[9, 4], progress=False, **PLAN)


def test_stacked_refuses_what_it_cannot_stack():
    with pytest.raises(TypeError, match="OneHidden or all Linear"):
        Stacked([STNClassifier(8, 4)])
    with pytest.raises(TypeError, match="OneHidden or all Linear"):
        Stacked([OneHidden(784, 8), Linear()])
    with pytest.raises(ValueError, match="equal shapes"):
        Stacked([OneHidden(784, 8), OneHidden(784, 9)])
    with pytest.raises(ValueError, match="at least one"):
        Stacked([])
    net = Stacked([OneHidden(784, 8)])
    with pytest.raises(ValueError, match="one seed per member"):
        fit_stacked(net, lambda *a: None, torch.zeros(2, 784), torch.zeros(2, dtype=torch.long),
                    seeds=[1, 2],
                    epochs=1, batch_size=1, lr=0.1)  # fmt: skip


def test_stacking_is_on_for_cuda_only_unless_told(monkeypatch):
    monkeypatch.delenv("FLOWBOUND_STACK", raising=False)
    assert not stacks_training(torch.device("cpu"))
    assert stacks_training(torch.device("cuda"))
    monkeypatch.setenv("FLOWBOUND_STACK", "1")
    assert stacks_training(torch.device("cpu"))
    monkeypatch.setenv("FLOWBOUND_STACK", "0")
    assert not stacks_training(torch.device("cuda"))
    monkeypatch.setenv("FLOWBOUND_STACK", "yes")
    with pytest.raises(ValueError, match="FLOWBOUND_STACK must be 1 .* or 0"):
        stacks_training(torch.device("cpu"))


def test_get_model_trains_the_seeds_together_and_caches_each(tiny, mnist_dir, monkeypatch):
    tiny["possibility"]["seeds"] = [0, 1, 2]
    monkeypatch.setenv("FLOWBOUND_STACK", "1")
    first = get_model("fro", tiny, section=4, progress=False)
    assert not first.from_cache
    assert len(list((cache.cache_dir() / "models").glob("*.pt"))) == 3  # one file per seed
    by_seed = {}
    for seed in (1, 2):
        p = copy.deepcopy(tiny)
        p["train"]["seed"] = seed
        by_seed[seed] = get_model("fro", p, section=4, progress=False)
        assert by_seed[seed].from_cache  # trained with seed 0
    # trained alone (the CPU path) they are the same networks, to rounding
    monkeypatch.setenv("FLOWBOUND_STACK", "0")
    monkeypatch.setenv("FLOWBOUND_CACHE", str(cache.cache_dir().parent / "alone"))
    for seed, stacked in [(0, first), *by_seed.items()]:
        p = copy.deepcopy(tiny)
        p["train"]["seed"] = seed
        alone = get_model("fro", p, section=4, progress=False)
        assert not alone.from_cache
        assert _max_diff(alone.model, stacked.model) < 1e-4  # float32 rounding
        assert abs(alone.test_accuracy - stacked.test_accuracy) <= 0.01


def test_only_the_networks_compared_over_seeds_train_their_seeds(tiny):
    from flowbound.book.trained import stack_seeds

    tiny["possibility"].update(seeds=[0, 1, 2], variants=["nt", "sdp"], beyond_variants=["cert"])
    assert stack_seeds(tiny, "nt", 4) == stack_seeds(tiny, "cert", 4) == [0, 1, 2]
    assert stack_seeds(tiny, "nt", 3) == [0]  # Section 3 uses one seed
    assert stack_seeds(tiny, "lin_nt", 4) == [0]  # not compared over seeds
    tiny["train"]["seed"] = 5
    assert stack_seeds(tiny, "sdp", 4) == [0, 1, 2, 5]


_GOOD = {"epochs": 1, "batch_size": 4, "lr": 0.01}


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"epochs": -1}, ValueError, "epochs must be an integer >= 1"),
        ({"epochs": 0}, ValueError, "epochs must be an integer >= 1"),
        ({"batch_size": -5}, ValueError, "batch_size must be an integer >= 1"),
        ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
        ({"lr": 0.0}, ValueError, "lr must be > 0"),
        ({"lr": float("nan")}, ValueError, "lr must be finite"),
        ({"x": torch.zeros(8, 5, 5)}, ValueError, "25 values per example|cannot score x of shape"),
        ({"y": torch.full((8,), 10)}, ValueError, r"y must lie in \[0, 10\)"),
        ({"y": torch.zeros(7, dtype=torch.long)}, ValueError, r"y must have shape \(8,\)"),
        ({"x": torch.zeros(0, 784), "y": torch.zeros(0, dtype=torch.long)}, ValueError, "empty"),
        ({"y": torch.zeros(8)}, TypeError, "int64 tensor of labels"),
    ],
)
@pytest.mark.parametrize("stacked", [True, False])
def test_training_refuses_bad_plans_and_data(stacked, change, error, match):
    """fit and fit_stacked: one clear error naming the argument, before any step."""
    args = {"x": torch.rand(8, 784), "y": torch.zeros(8, dtype=torch.long), **_GOOD}
    args.update(change)
    x, y = args.pop("x"), args.pop("y")
    if stacked:
        net = Stacked([OneHidden(784, 8), OneHidden(784, 8)])
        loss = VARIANTS.named("nt").stacked_loss_factory()({})
        with pytest.raises(error, match=match):
            fit_stacked(net, loss, x, y, seeds=[1, 2], progress=False, **args)
    else:
        loss = VARIANTS.named("nt").loss_factory()({})
        with pytest.raises(error, match=match):
            fit(OneHidden(784, 8), loss, x, y, seed=0, progress=False, **args)
