"""End to end: training on a small real dataset, reproducibility, and the CLI."""
import math
import re

import numpy as np
import pytest

from minicnn import SGD, Adam
from minicnn import cli, gradcheck
from minicnn.gradcheck import toy_residual_network
from minicnn.train import accuracy, fit, predict


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8x8 digits (bundled, no download), grey repeated to 3 channels."""
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x = np.repeat((d.images / 16.0).astype(np.float32)[:, None], 3, axis=1)
    y = d.target.astype(np.int64)
    return (x[:500], y[:500]), (x[1000:1300], y[1000:1300])


def train(digits, seed=0, shuffle_seed=0, epochs=5, lr=1e-2):
    (x, y), val = digits
    net = toy_residual_network(rng=seed, dtype=np.float32, num_classes=10)
    history = fit(net, Adam(net, lr=lr), x, y, epochs=epochs, batch_size=32, rng=shuffle_seed,
                  val=val, progress=False)
    return net, history


def test_fit_with_adam_learns_digits(digits):
    (x, y), (x_val, y_val) = digits
    net = toy_residual_network(rng=0, dtype=np.float32, num_classes=10)
    chance_loss = math.log(10)
    assert accuracy(net, x_val, y_val) < 0.35  # untrained: near chance (0.1)
    net, history = train(digits)
    losses = [r["loss"] for r in history]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert losses[0] < chance_loss + 0.5
    # Not strictly monotone for every seed, but far down after five epochs.
    assert losses[1] < losses[0]
    assert losses[-1] < 0.35 * losses[0] and losses[-1] < 0.6
    assert history[-1]["train_accuracy"] > 0.8
    assert history[-1]["val_accuracy"] > 0.6  # chance is 0.1
    assert history[-1]["val_accuracy"] == accuracy(net, x_val, y_val)
    assert not any(layer.training for layer in net.layers())  # fit leaves the net in eval


def test_same_seed_same_result(digits):
    net_a, hist_a = train(digits, epochs=2)
    net_b, hist_b = train(digits, epochs=2)
    assert hist_a == hist_b
    state_a, state_b = net_a.state_dict(), net_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        np.testing.assert_array_equal(state_a[key], state_b[key], err_msg=key)
    # The shuffling seed matters: the check above is not comparing constants.
    _, hist_c = train(digits, shuffle_seed=1, epochs=2)
    assert hist_c != hist_a


def test_fit_with_sgd_schedule_and_augment(digits):
    (x, y), _ = digits
    x, y = x[:128], y[:128]
    net = toy_residual_network(rng=0, dtype=np.float32, num_classes=10)
    opt = SGD(net, lr=0.5, momentum=0.9)
    seen_lrs, augmented = [], []

    def schedule(epoch):
        seen_lrs.append(epoch)
        return 0.05 / (epoch + 1)

    def augment(batch, rng):
        augmented.append(len(batch))
        return batch[:, :, :, ::-1].copy()

    history = fit(net, opt, x, y, epochs=2, batch_size=64, rng=0, augment=augment,
                  schedule=schedule, progress=False)
    assert seen_lrs == [0, 1] and opt.lr == pytest.approx(0.025)
    assert augmented == [64, 64, 64, 64]
    assert len(history) == 2 and np.isfinite(history[-1]["loss"])
    with pytest.raises(ValueError, match="3 inputs but 2 labels"):
        fit(net, opt, x[:3], y[:2], progress=False)


def test_predict_batches_and_restores_training_mode(digits):
    (x, _), _ = digits
    net = toy_residual_network(rng=0, dtype=np.float32, num_classes=10).train()
    whole = predict(net, x[:50], batch_size=50)
    pieces = predict(net, x[:50], batch_size=7)
    assert whole.shape == (50, 10)
    np.testing.assert_allclose(pieces, whole, rtol=1e-5, atol=1e-6)
    assert all(layer.training for layer in net.layers())
    net.eval()
    np.testing.assert_array_equal(net.forward(x[:50]), whole)


# -- the command line -----------------------------------------------------------

def test_cli_gradcheck_passes_and_prints_a_table(capsys):
    assert cli.main(["gradcheck"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    match = re.fullmatch(r"(\d+) passed, 0 failed", out[-1])
    assert match, out[-1]
    rows = [line for line in out if line.endswith(" pass") or line.endswith(" FAIL")]
    assert int(match.group(1)) == len(rows) == len(gradcheck.check_all(seed=0))
    assert out[0].split()[:3] == ["layer", "mode", "rel."]
    assert any(line.startswith("residual network") for line in rows)


def test_cli_gradcheck_with_a_seed(capsys):
    assert cli.main(["gradcheck", "--seed", "7"]) == 0
    assert re.fullmatch(r"\d+ passed, 0 failed", capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_gradcheck_exit_code_reports_a_failure(capsys, monkeypatch):
    monkeypatch.setattr(gradcheck, "check_all",
                        lambda seed=0: [("Conv2d", "broken", 0.3, False), ("ReLU", "", 0.0, True)])
    assert cli.main(["gradcheck"]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1] == "1 passed, 1 failed"


def test_cli_needs_a_command(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
