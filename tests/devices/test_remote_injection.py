"""ssh:// device URLs are untrusted text: no part of one may become an ssh option or a command.

Every hostile URL below is otherwise valid (the loopback sshd's user, address, port, key and
known_hosts), so what stops it is the check, not a broken connection. The payload is a ProxyCommand
that would create `pwned...` in the working folder, which each test points at its tmp_path; before
the fix the user-position one did create `pwned@127.0.0.1` there.
"""
import json

import pytest

from edgeslim.core.errors import DeviceError
from edgeslim.devices.remote import RemoteTarget
from helpers import spec

PAYLOAD = "touch${IFS}pwned"  # relative: the file lands in the cwd, which is tmp_path
PROXY = f"-oProxyCommand={PAYLOAD}"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run with tmp_path as the cwd, where a ProxyCommand that got through would leave its file."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _pwned(folder):
    return sorted(path.name for path in folder.rglob("pwned*"))


def _hostile_urls(server, python, tmp):
    """(id, URL) for each position a probe tried; all else is the loopback sshd's valid URL."""
    user, port, key, known = server.user, server.port, server.key, server.known_hosts
    good = f"python={python}&key={key}&known_hosts={known}"
    return [
        ("user", f"ssh://{PROXY}@127.0.0.1:{port}?{good}"),
        ("user-absolute-path", f"ssh://-oProxyCommand=touch${{IFS}}{tmp}/pwned@127.0.0.1:{port}?{good}"),
        ("host", f"ssh://{user}@{PROXY}:{port}?{good}"),
        ("host-without-user", f"ssh://{PROXY}:{port}?{good}"),
        ("host-then-hostname-like", f"ssh://{PROXY}@localhost?{good}"),
        ("percent-encoded-dash-user", f"ssh://%2DoProxyCommand={PAYLOAD}@127.0.0.1:{port}?{good}"),
        ("percent-encoded-dash-host", f"ssh://{user}@%2DoProxyCommand={PAYLOAD}:{port}?{good}"),
        ("key", f"ssh://{user}@127.0.0.1:{port}?python={python}&key={PROXY}&known_hosts={known}"),
        ("known-hosts-space", f"ssh://{user}@127.0.0.1:{port}?python={python}&key={key}"
                              f"&known_hosts=/x ProxyCommand={PAYLOAD}"),
        ("known-hosts-%20", f"ssh://{user}@127.0.0.1:{port}?python={python}&key={key}"
                            f"&known_hosts=/x%20ProxyCommand={PAYLOAD}"),
        ("known-hosts-plus", f"ssh://{user}@127.0.0.1:{port}?python={python}&key={key}"
                             f"&known_hosts=/x+ProxyCommand={PAYLOAD}"),
        ("python-semicolon", f"ssh://{user}@127.0.0.1:{port}?python={python};{PAYLOAD}&key={key}&known_hosts={known}"),
        ("python-substitution", f"ssh://{user}@127.0.0.1:{port}?python=$({PAYLOAD})&key={key}&known_hosts={known}"),
        ("repeated-key", f"ssh://{user}@127.0.0.1:{port}?{good}&key={PROXY}"),
        ("repeated-python", f"ssh://{user}@127.0.0.1:{port}?{good}&python=/bin/sh"),
        ("workdir-option", f"ssh://{user}@127.0.0.1:{port}?{good}&workdir={PROXY}"),
        ("workdir-semicolon", f"ssh://{user}@127.0.0.1:{port}?{good}&workdir=/tmp/x;{PAYLOAD}"),
    ]


def _assert_refused(result, folder):
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeslim: error: "), result.stderr
    assert "is refused" in lines[0], lines[0]  # by the URL check, not by a connection that failed
    assert "Traceback" not in result.stderr + result.stdout
    assert _pwned(folder) == []


def test_hostile_urls_are_refused_by_validate(cli, cnn_bundles, sshd, torch_free_python, in_tmp):
    for name, url in _hostile_urls(sshd, torch_free_python, in_tmp):
        result = cli("validate", cnn_bundles["fp32"], "--data", spec("digits"), "--device", url,
                     "--out", in_tmp / "r.json")
        _assert_refused(result, in_tmp)
        assert not (in_tmp / "r.json").exists(), name


def test_hostile_urls_are_refused_by_a_recipe_before_any_work(cli, sshd, torch_free_python, in_tmp):
    for index, (name, url) in enumerate(_hostile_urls(sshd, torch_free_python, in_tmp)):
        recipe = in_tmp / f"recipe-{index}.yaml"
        recipe.write_text(json.dumps({  # JSON is YAML, and quotes the URL's '?', '&', '$' and spaces
            "model": "edgeslim.demo:digits_cnn", "data": "edgeslim.demo:digits_data",
            "devices": [url], "candidates": [{"name": "fp32"}]}))
        out = in_tmp / f"out-{index}"
        result = cli("run", recipe, "--out", out)
        _assert_refused(result, in_tmp)
        assert not (out / "fp32").exists() and not (out / "report.json").exists(), name


def test_a_password_in_the_url_is_refused_and_not_echoed(cli, cnn_bundles, sshd, in_tmp):
    result = cli("validate", cnn_bundles["fp32"], "--data", spec("digits"),
                 "--device", f"ssh://{sshd.user}:hunter2@127.0.0.1:{sshd.port}", "--out", in_tmp / "r.json")
    _assert_refused(result, in_tmp)
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize("url, named", [
    ("ssh://pi@rpi.local:0", "'0'"), ("ssh://pi@rpi.local:65536", "'65536'"), ("ssh://pi@rpi.local:+22", "'+22'"),
    ("ssh://pi@rpi.local?threads=1025", "'1025'"), ("ssh://pi@rpi.local?threads=-1", "'-1'"),
    ("ssh://pi@rpi.local?workdir=relative", "'relative'"), ("ssh://pi@rpi.local?python=~/bin/python", "'~/bin/python'"),
    ("ssh://pi@rpi.local?bogus=1", "'bogus'"), ("ssh://pi@rpi.local/path", "'/path'"),
    ("ssh://pi@[::1%25lo]", "'[::1%25lo]'"), ("ssh://pi@a..b", "'a..b'"), ("ssh://pi@x\n-oFoo=bar", "'x\\n-oFoo=bar'"),
])
def test_each_rule_names_the_bad_value_in_one_line(url, named):
    with pytest.raises(DeviceError) as refused:
        RemoteTarget(url)
    message = str(refused.value)
    assert named in message and "\n" not in message


def test_ipv6_goes_bare_to_ssh_and_bracketed_to_scp():
    target = RemoteTarget("ssh://pi@[2001:db8::7]:2222?threads=4")
    argv = target.ssh_argv("true")
    assert argv[argv.index("--") + 1:] == ["pi@2001:db8::7", "true"]
    assert target._remote("/tmp/x") == "pi@[2001:db8::7]:/tmp/x"
    assert target.port == 2222 and target.threads == 4


def test_the_destination_comes_right_after_double_dash(sshd, torch_free_python):
    target = RemoteTarget(sshd.url(torch_free_python))
    argv = target.ssh_argv("true")
    assert argv.count("--") == 1 and argv[argv.index("--") + 1:] == [f"{sshd.user}@127.0.0.1", "true"]
    scp = target.scp_argv("/local/file", target._remote("/tmp/file"))
    assert scp.count("--") == 1 and scp[scp.index("--") + 1:] == ["/local/file", f"{sshd.user}@127.0.0.1:/tmp/file"]


def test_a_valid_url_still_reaches_the_device_and_copies_both_ways(sshd, torch_free_python, in_tmp):
    target = RemoteTarget(sshd.url(torch_free_python))
    target.check_available()
    local = in_tmp / "a:b"  # scp would read a relative `a:b` as host `a`; the copy passes it absolute
    local.write_text("payload")
    folder = f"/tmp/edgeslim-injection-{sshd.port}"
    target.ssh(f"mkdir -p {folder}", "mkdir")
    try:
        target.copy_to(local.relative_to(in_tmp), f"{folder}/copied")
        target.copy_from(f"{folder}/copied", in_tmp / "back")
    finally:
        target.ssh(f"rm -rf {folder}", "cleanup")
    assert (in_tmp / "back").read_text() == "payload"


def test_double_dash_alone_stops_a_hostile_destination(sshd, torch_free_python, in_tmp):
    """Second line of defence, checked live: a destination that skipped the URL check (set by hand
    here) followed by a hostname-like argument, the shape that ran the ProxyCommand before the fix."""
    target = RemoteTarget(sshd.url(torch_free_python))
    target.host = f"{PROXY}@127.0.0.1"
    with pytest.raises(DeviceError):
        target.ssh("true", "the hostile call", 15)
    target.user = PROXY
    (in_tmp / "file").write_text("x")
    with pytest.raises(DeviceError):
        target.copy_to(in_tmp / "file", "/tmp/x")
    assert _pwned(in_tmp) == []
