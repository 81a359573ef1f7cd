"""Podman as it works on these machines (issue #26): Debian's podman with runc, cgroupfs, file
events, container storage under a work folder, host network and explicit ulimits within the
machine's hard limits (crun, and podman's default ulimits, fail here with `setrlimit ...
Operation not permitted`). No registry is reachable, so the Dockerfile's base is replaced by a
bookworm made here with debootstrap from the Debian archive apt uses, cached by its recipe.

Every machine-specific value comes from the environment, with what worked here as default:

  IMREF_IMAGE_WORKDIR          storage roots and the base's lock  (~/.cache/imref-stream/image)
  IMREF_IMAGE_STORAGE_DRIVER   vfs; overlay is faster where the kernel allows it
  IMREF_IMAGE_ULIMITS          "nofile=20000:20000 nproc=4096:4096"
  IMREF_IMAGE_CA_BUNDLE        the host's CA bundle, mounted over the image's while pip runs
                               (/etc/ssl/certs/ca-certificates.crt; empty: no mount)
  IMREF_IMAGE_DEBIAN_MIRROR    the archive the base comes from (default: apt's, for bookworm)
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[2]

# What the local base is made of; a change here makes a new base (its tag is this recipe's hash).
BASE_RECIPE = {
    "suite": "bookworm",
    "variant": "minbase",
    "include": ["python3", "python3-venv", "python-is-python3"],
    # what python:*-slim-bookworm sets and an imported root file system lacks
    "changes": ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8",
                'CMD ["python3"]'],
    # the slim images carry no package cache or lists either
    "emptied": ["var/cache/apt/archives", "var/lib/apt/lists"],
}


@dataclass(frozen=True)
class Podman:
    workdir: Path
    driver: str
    ulimits: tuple[str, ...]
    ca_bundle: str

    @classmethod
    def from_env(cls) -> "Podman":
        env = os.environ.get
        return cls(workdir=Path(env("IMREF_IMAGE_WORKDIR") or Path.home() / ".cache" / "imref-stream" / "image"),
                   driver=env("IMREF_IMAGE_STORAGE_DRIVER") or "vfs",
                   ulimits=tuple((env("IMREF_IMAGE_ULIMITS") or "nofile=20000:20000 nproc=4096:4096").split()),
                   ca_bundle=env("IMREF_IMAGE_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))

    def command(self, *args: str) -> list[str]:
        store = self.workdir / self.driver
        # --tmpdir too: podman's default (/run/libpod) is shared by every store on the machine
        return ["podman", "--root", str(store / "graph"), "--runroot", str(store / "run"),
                "--tmpdir", str(store / "tmp"), "--storage-driver", self.driver, "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", "--runtime", "runc", *args]

    def __call__(self, *args: str, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
        done = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout, **kw)
        if check and done.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args[:2])} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return done

    def ulimit_args(self) -> list[str]:
        return [arg for limit in self.ulimits for arg in ("--ulimit", limit)]

    def exists(self, image: str) -> bool:
        return self("image", "exists", image, check=False).returncode == 0

    def remove_leftovers(self, container_prefix: str, image_prefix: str) -> None:
        """Containers and images of test runs killed before their teardown, told by the pid that
        ends their names: on vfs each holds a full copy of the image. A live run's stay."""
        containers = self("ps", "-a", "--format", "{{.Names}}").stdout.split()
        images = self("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        for kind, prefix, names in (("rm", container_prefix, containers), ("rmi", image_prefix, images)):
            for name in names:
                if name.startswith(prefix) and name[len(prefix):].isdigit() and not _alive(int(name[len(prefix):])):
                    self(kind, "-f", name, check=False)

    def local_base(self) -> str:
        """The bookworm base, made once per recipe and mirror; later runs find it in the store."""
        mirror = os.environ.get("IMREF_IMAGE_DEBIAN_MIRROR") or apt_mirror(BASE_RECIPE["suite"])
        key = hashlib.sha256(json.dumps({**BASE_RECIPE, "mirror": mirror}, sort_keys=True).encode()).hexdigest()
        tag = f"localhost/imref-base:{key[:16]}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        with _locked(self.workdir / "base.lock"):  # another worktree's test may be making the same one
            if self.exists(tag):
                return tag
            rootfs = self.workdir / f"rootfs-{key[:16]}"
            shutil.rmtree(rootfs, ignore_errors=True)  # a run stopped half-way
            try:
                done = subprocess.run(["debootstrap", f"--variant={BASE_RECIPE['variant']}",
                                       f"--include={','.join(BASE_RECIPE['include'])}", BASE_RECIPE["suite"],
                                       str(rootfs), mirror], capture_output=True, text=True, timeout=900)
                if done.returncode != 0:
                    raise RuntimeError(f"debootstrap failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr}")
                for folder in BASE_RECIPE["emptied"]:
                    for entry in (rootfs / folder).iterdir():
                        if entry.is_file():
                            entry.unlink()
                tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
                changes = [arg for change in BASE_RECIPE["changes"] for arg in ("--change", change)]
                self("import", *changes, "-", tag, stdin=tar.stdout, timeout=300)
                if tar.wait() != 0:
                    raise RuntimeError(f"tar of {rootfs} failed ({tar.returncode})")
            finally:
                shutil.rmtree(rootfs, ignore_errors=True)
        return tag

    def build(self, base: str, tag: str, log: Path) -> None:
        """deploy/Dockerfile on `base`. One working container per stage (--layers=false): on vfs every
        layer is a full copy of the file system, and a layer per instruction tripled the time."""
        mounts = ["-v", f"{self.ca_bundle}:/etc/ssl/certs/ca-certificates.crt:ro"] if self.ca_bundle else []
        with open(log, "w") as out:
            done = subprocess.run(self.command(
                "build", "--layers=false", "--pull=never", "--network", "host", *self.ulimit_args(), *mounts,
                "--build-arg", f"BASE={base}", "-f", "deploy/Dockerfile", "-t", tag, "."),
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=1200)
        if done.returncode != 0:
            raise RuntimeError(f"the image did not build ({done.returncode}):\n{log.read_text()[-4000:]}")


def apt_mirror(suite: str) -> str:
    """The archive apt fetches `suite` from: the one this machine can reach."""
    out = subprocess.run(["apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE)"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        uri, release = line.split()
        if release == suite:
            return uri
    return "http://deb.debian.org/debian/"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def _locked(path: Path):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
