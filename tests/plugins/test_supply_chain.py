"""Supply chain and hardening of the native library and the tooling around it (issue 8).

* libyoso_ort.so (the one the package loads) exports exactly ``RegisterCustomOps``; it is linked with
  full RELRO (``PT_GNU_RELRO`` + ``BIND_NOW``), a non-executable stack, no text relocations, no
  RPATH/RUNPATH (no library search path an attacker could write to) and no dependency on
  libonnxruntime (the API comes from the runtime that loads it); it was compiled with
  ``-fstack-protector-strong`` (imports ``__stack_chk_fail``) and ``-D_FORTIFY_SOURCE=2`` (imports
  fortified ``__*_chk`` functions); the CMake build asks for exactly these flags.
* scripts/dev/fetch_ort_headers.sh pins the package version and its SHA-256 and verifies the checksum
  before unpacking; the CMake files download nothing else (no FetchContent / ExternalProject /
  file(DOWNLOAD)).
* No network at run time: export (with the ORT parity check), session creation, inference and the
  CLI's tokenizer path run in-process with every socket entry point patched to raise and
  HF_HUB_OFFLINE=1, and no connection is attempted.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from yoso_deploy import ort_library_path

REPO = Path(__file__).resolve().parents[2]


def _tool(*args: str) -> str:
    exe = shutil.which(args[0])
    assert exe, f"{args[0]} (binutils) is required for the hardening checks"
    r = subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def lib() -> str:
    return str(ort_library_path())


def _symbols(text: str) -> set[str]:
    return {line.split()[-1].split("@")[0] for line in text.splitlines() if line.strip()}


def test_exports_only_register_custom_ops(lib):
    defined = _symbols(_tool("nm", "-D", "--defined-only", lib))
    assert defined == {"RegisterCustomOps"}, f"unexpected exported symbols: {sorted(defined - {'RegisterCustomOps'})}"


def test_full_relro_nx_stack_no_rpath(lib):
    dyn = _tool("readelf", "-dW", lib)
    flags = " ".join(ln for ln in dyn.splitlines() if "(FLAGS" in ln)
    assert "BIND_NOW" in flags or re.search(r"FLAGS_1\).*\bNOW\b", flags), f"not linked with -z now:\n{flags}"
    assert "(RPATH)" not in dyn and "(RUNPATH)" not in dyn, "the library carries a library search path"
    assert "(TEXTREL)" not in dyn and "TEXTREL" not in flags, "text relocations (non-PIC code)"
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.*?)\]", dyn)
    assert needed and not any("onnxruntime" in n for n in needed), f"links ONNX Runtime: {needed}"
    segs = _tool("readelf", "-lW", lib)
    assert re.search(r"^\s*GNU_RELRO\s", segs, re.M), "no PT_GNU_RELRO segment (link with -z relro)"
    stack = re.search(r"^\s*GNU_STACK\s.*?\s(R?W?E?)\s+0x[0-9a-f]+\s*$", segs, re.M)
    assert stack and "E" not in stack.group(1), f"executable stack: {stack.group(0) if stack else 'no GNU_STACK'}"


def test_stack_protector_and_fortify(lib):
    undefined = _symbols(_tool("nm", "-D", "--undefined-only", lib))
    assert "__stack_chk_fail" in undefined, "no stack protector (-fstack-protector-strong) in the library"
    fortified = sorted(s for s in undefined if re.fullmatch(r"__\w+_chk", s) and s != "__stack_chk_fail")
    assert fortified, "no fortified libc calls (__*_chk): built without -D_FORTIFY_SOURCE=2 and optimisation"
    print(f"fortified calls: {', '.join(fortified)}")
    cmake = (REPO / "plugins" / "CMakeLists.txt").read_text()
    for flag in ("-fstack-protector-strong", "-D_FORTIFY_SOURCE=2", "-z,relro,-z,now", "--version-script"):
        assert flag in cmake, f"plugins/CMakeLists.txt no longer asks for {flag}"


def test_header_fetch_is_pinned_and_verified():
    script = (REPO / "scripts" / "dev" / "fetch_ort_headers.sh").read_text()
    version = re.search(r"^VERSION=(\S+)$", script, re.M)
    sha = re.search(r"^SHA256=([0-9a-f]+)$", script, re.M)
    assert version and re.fullmatch(r"\d+\.\d+\.\d+[\w.+~-]*", version.group(1)), "header package version not pinned"
    assert sha and len(sha.group(1)) == 64, "no pinned SHA-256 of the header package"
    check = script.find("sha256sum -c")
    unpack = script.find("dpkg-deb -x")
    assert 0 <= check < unpack, "the checksum must be verified before the package is unpacked"
    assert re.search(r"sha256sum -c[^\n]*\|\| die", script), "a checksum mismatch must abort the script"
    assert '"$PKG=$VERSION"' in script, "apt must download exactly the pinned version"
    assert "set -euo pipefail" in script
    # The cached copy the build uses records the same pin.
    cache = Path.home() / ".cache" / "yoso-deploy" / f"onnxruntime-headers-{version.group(1)}" / "SOURCE"
    if cache.is_file():
        assert f"sha256={sha.group(1)}" in cache.read_text(), f"{cache} was fetched with another checksum"
    for cm in [REPO / "CMakeLists.txt", *(REPO / "plugins").rglob("CMakeLists.txt"), *(REPO / "plugins").rglob("*.cmake")]:
        text = cm.read_text()
        for bad in ("FetchContent", "ExternalProject", "file(DOWNLOAD", "file( DOWNLOAD"):
            assert bad not in text, f"{cm.relative_to(REPO)} downloads at build time ({bad})"


class NetworkUsed(OSError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Every way to open a connection or resolve a name raises; attempts are recorded."""
    attempts = []

    def deny(name):
        def f(*args, **kwargs):
            attempts.append((name, repr(args)[:200]))
            raise NetworkUsed(f"network access at run time: {name}{args!r}"[:300])
        return f

    for name in ("connect", "connect_ex", "sendto", "sendmsg"):
        monkeypatch.setattr(socket.socket, name, deny(f"socket.{name}"))
    for name in ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex"):
        monkeypatch.setattr(socket, name, deny(name))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return attempts


def test_guard_catches_network_use(no_network):
    """Control: the patch really intercepts a connection attempt."""
    import urllib.request

    with pytest.raises(Exception):
        urllib.request.urlopen("http://example.invalid/", timeout=1)
    assert no_network, "the socket patch did not see the connection attempt"
    no_network.clear()


def test_no_network_at_run_time(no_network, tmp_path):
    import torch
    from click.testing import CliRunner
    from transformers import YosoConfig, YosoForQuestionAnswering

    from yoso_deploy.cli.main import main
    from yoso_deploy.export import default_model_dir
    from yoso_deploy.workflow import export
    from yoso_deploy.runtime import create_session

    # A tiny random checkpoint with the embedded model's tokenizer (same vocabulary size).
    src = default_model_dir()
    vocab = len(__import__("json").loads((src / "tokenizer.json").read_text())["model"]["vocab"])
    cfg = YosoConfig(vocab_size=max(vocab, 400), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, num_hash=4, hash_code_len=4,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=1)
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt"
    YosoForQuestionAnswering(cfg).save_pretrained(str(ckpt))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (src / name).is_file():
            shutil.copy(src / name, ckpt / name)

    result = export(ckpt, tmp_path / "qa", task="qa", validate=True, check_shapes=((2, 9),))
    assert result.ok and result.parity, result.parity_table()
    sess = create_session(result.onnx_path, intra_op_threads=2)
    out = sess.run(None, {"input_ids": np.array([[0, 7, 9, 2]]), "attention_mask": np.ones((1, 4), np.int64)})
    assert out[0].shape == (1, 4)
    r = CliRunner().invoke(main, ["run", "--model", str(tmp_path / "qa"), "--text", "Where did Ada move?",
                                  "--text-pair", "Ada moved to Oslo."])
    assert r.exit_code == 0, r.output
    assert "answer" in __import__("json").loads(r.stdout)  # the QA pipeline's result
    assert not no_network, f"network used at run time: {no_network}"
