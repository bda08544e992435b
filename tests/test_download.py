"""Downloads against a server on 127.0.0.1 that serves files the tests make."""
import functools
import hashlib
import http.server
import json
import threading

import numpy as np
import pytest

from minicnn.io.download import download, DownloadError


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/'served'; yields its base URL."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _entry(url, data, algorithm="sha256", arch=None, variant=None):
    return {"url": url, "checksum": f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}",
            "arch": arch, "variant": variant, "about": "test file"}


def test_download_verifies_and_moves_into_place(server, tmp_path):
    root, base = server
    data = json.dumps({"0": ["n0", "zero"]}).encode()
    (root / "index.json").write_bytes(data)
    out = tmp_path / "out"
    path = download("index", folder=out, registry={"index": _entry(base + "index.json", data)},
                    progress=False)
    assert path == out / "index.json" and path.read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == ["index.json"]


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    root, base = server
    (root / "index.json").write_bytes(b"tampered")
    entry = _entry(base + "index.json", b"original", algorithm="md5")
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download("index", folder=out, registry={"index": entry}, progress=False)
    assert list(out.iterdir()) == []


def test_prefix_checksum_as_in_hub_file_names(server, tmp_path):
    root, base = server
    (root / "f.json").write_bytes(b"{}")
    prefix = hashlib.sha256(b"{}").hexdigest()[:8]
    entry = {"url": base + "f.json", "checksum": f"sha256:{prefix}", "arch": None}
    assert download("f", folder=tmp_path, registry={"f": entry}, progress=False).is_file()
    entry["checksum"] = "sha256:00000000"
    with pytest.raises(DownloadError):
        download("f", folder=tmp_path / "x", registry={"f": entry}, progress=False)


def test_offline_and_http_errors_are_clear(server, tmp_path):
    _, base = server
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match="HTTP 404"):
        download("gone", folder=out, registry={"gone": _entry(base + "gone.json", b"")},
                 progress=False)
    closed = "http://127.0.0.1:9/nothing.json"     # discard port: nothing listens there
    with pytest.raises(DownloadError, match="cannot download"):
        download("off", folder=out, registry={"off": _entry(closed, b"")}, progress=False)
    assert list(out.iterdir()) == []


def test_unknown_name_lists_known_ones(tmp_path):
    with pytest.raises(KeyError, match="cifar_resnet20"):
        download("resnet9000", folder=tmp_path)


def _akamaster_state(net):
    """Our CIFAR ResNet state under the names akamaster's checkpoints use."""
    out = {}
    for name, value in net.state_dict().items():
        parts = name.split(".")
        if parts[0] == "conv1":
            key = "conv1." + parts[1]
        elif parts[0] == "bn_conv1":
            key = "bn1." + parts[1]
        elif parts[0] == "fc":
            key = "linear." + parts[1]
        else:
            stage, index = int(parts[0][3]) - 1, ord(parts[0][4]) - ord("a")
            child = {"branch2a": "conv1", "bn2a": "bn1", "branch2b": "conv2", "bn2b": "bn2"}
            key = f"layer{stage}.{index}.{child[parts[1]]}.{parts[2]}"
        out["module." + key] = value
    return out


def test_weights_download_converts_a_checkpoint(server, tmp_path):
    torch = pytest.importorskip("torch")
    from minicnn.io.model_file import load
    from minicnn.models import cifar_resnet
    root, base = server
    net = cifar_resnet(20, rng=1)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _akamaster_state(net).items()}
    torch.save({"state_dict": state, "best_prec1": 91.0}, root / "resnet20-test.th",
               _use_new_zipfile_serialization=False)
    data = (root / "resnet20-test.th").read_bytes()
    registry = {"cifar_resnet20": _entry(base + "resnet20-test.th", data, arch="cifar_resnet20",
                                         variant="cifar")}
    out = tmp_path / "out"
    path = download("cifar_resnet20", folder=out, registry=registry, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["cifar_resnet20.h5"]
    loaded = load(path)
    assert loaded.metadata["source"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert loaded.metadata["labels"][0] == "airplane"
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(loaded.forward(x), net.eval().forward(x), rtol=1e-6, atol=1e-6)
