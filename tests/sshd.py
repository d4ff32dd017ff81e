"""A real OpenSSH server on 127.0.0.1 for the remote-device tests: installed if missing, own keys
and config in a temporary folder, started on a free port, stopped after."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def ensure_installed() -> str | None:
    """Install Debian's openssh-server when missing; return why not where that cannot be done."""
    if Path(SSHD).exists():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "openssh-server is not installed and this user cannot install it (needs root and apt-get)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "openssh-server"]):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0 and command[1] == "install":
            return f"apt-get could not install openssh-server: {done.stderr.strip()[-300:]}"
    return None if Path(SSHD).exists() else "openssh-server installed no sshd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoopbackSshd:
    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.user = os.environ.get("USER") or subprocess.run(
            ["id", "-un"], capture_output=True, text=True).stdout.strip()
        self.key = folder / "id_ed25519"
        self.known_hosts = folder / "known_hosts"
        self.process = None

    def start(self) -> LoopbackSshd:
        folder = self.folder
        for name in ("host_ed25519", "id_ed25519"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", folder / name], check=True)
        (folder / "authorized_keys").write_text((folder / "id_ed25519.pub").read_text())
        for path in (folder / "authorized_keys", self.key):
            path.chmod(0o600)
        (folder / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_ed25519'}",
            f"AuthorizedKeysFile {folder / 'authorized_keys'}", f"PidFile {folder / 'sshd.pid'}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
            "StrictModes no", "UsePAM no", "Subsystem sftp internal-sftp", ""]))
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", folder / "sshd_config"],
                                        stdout=subprocess.DEVNULL, stderr=open(folder / "sshd.log", "w"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"sshd did not start: {(folder / 'sshd.log').read_text()[-500:]}")

    def url(self, python: Path) -> str:
        return (f"ssh://{self.user}@127.0.0.1:{self.port}?python={python}&key={self.key}"
                f"&known_hosts={self.known_hosts}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
