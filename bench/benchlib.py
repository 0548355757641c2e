"""The harness the bench/ scripts share (unlock, lifecycle, ca-rotate).

* CLI processes timed by wall clock, from spawn to exit (`call`, `run`);
* undo actions for everything a script starts, run newest first, also
  on failure and on signals (`CLEANUP`);
* the host's Docker engine and network interfaces, read before a run and
  compared after it (`HostWatch`) — the host engine is only ever read;
* a dockerd of the script's own (`PrivateEngine`): own data root, exec
  root, pid file, socket and containerd, vfs storage, no bridge, no
  iptables, an empty config file, run in a network namespace of its own
  (`PrivateNetns`, or `unshare --net` per start);
* `moat daemon` processes with their own state directories (`MoatNode`);
* what every script's command line, build step and report share.

Standard library only. A script imports it from its own directory.
"""

import argparse
import atexit
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = os.path.basename(sys.argv[0])  # the script's name, for messages

DAEMON_TIMEOUT = 60.0     # seconds a daemon may take to answer


def log(msg):
    print(f"{NAME}: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ------------------------------------------------------------- processes

def call(cmd, env=None, input=None, timeout=120):
    """Runs cmd (standard input: `input`, or /dev/null); returns
    (seconds, returncode, stdout, stderr), returncode -1 if it could not
    run or timed out. Wall clock around the whole process, spawn to exit."""
    feed = {"stdin": subprocess.DEVNULL} if input is None else {"input": input}
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=timeout, **feed)
    except (OSError, subprocess.TimeoutExpired) as e:
        return time.perf_counter() - t0, -1, "", str(e)
    return time.perf_counter() - t0, p.returncode, p.stdout, p.stderr


def run(cmd, env=None, input=None, timeout=120):
    """Like call, but a failure is an error; returns (seconds, stdout)."""
    dt, rc, out, err = call(cmd, env=env, input=input, timeout=timeout)
    if rc != 0:
        raise BenchError(f"`{' '.join(cmd)}` exited {rc}\n"
                         f"--- stdout\n{out}--- stderr\n{err}")
    return dt, out


def stop_process(p, name, grace=20.0):
    """SIGTERM, then SIGKILL if p has not exited within grace seconds."""
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop within {grace:.0f}s of SIGTERM; killing it")
        p.kill()
        p.wait()
    except ProcessLookupError:
        pass


def wait_until(what, fn, timeout, interval=0.02):
    """Calls fn until it returns a true value; returns that value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except BenchError as e:
            last = e
        time.sleep(interval)
    raise BenchError(f"timed out waiting for {what}" + (f": {last}" if last else ""))


def version(cmd):
    _, rc, out, _ = call(cmd)
    return out.strip() if rc == 0 else "?"


# ---------------------------------------------------------------- cleanup

class Cleanup:
    """Undo actions, run newest first, each at most once, also on signals
    and at exit. A signal that arrives while they run is held until they
    are done (then raised), so a second Ctrl-C does not cut the cleanup
    short."""

    def __init__(self):
        self.actions = []
        self.running = False
        self.held = None

    def push(self, name, fn):
        self.actions.append((name, fn))
        return len(self.actions) - 1

    def run_one(self, idx):
        name, fn = self.actions[idx]
        if fn is None:
            return
        self.actions[idx] = (name, None)
        try:
            fn()
        except Exception as e:  # keep cleaning up
            log(f"cleanup ({name}) failed: {e}")

    def run_all(self):
        self.running = True
        try:
            for idx in range(len(self.actions) - 1, -1, -1):
                self.run_one(idx)
        finally:
            self.running = False
        if self.held is not None:
            signum, self.held = self.held, None
            raise KeyboardInterrupt(f"signal {signum}")


CLEANUP = Cleanup()
atexit.register(CLEANUP.run_all)

# What cleanup could not remove; HostWatch.check reports it.
LEFTOVERS = []


def on_signal(signum, _frame):
    if CLEANUP.running:
        log(f"signal {signum} while cleaning up; cleaning up first")
        CLEANUP.held = signum
        return
    raise KeyboardInterrupt(f"signal {signum}")


def handle_signals(*signums):
    for s in signums:
        signal.signal(s, on_signal)


def unmount_under(path):
    """Unmounts whatever dockerd left mounted below path (netns files)."""
    mounts = []
    with open("/proc/self/mounts") as f:
        for line in f:
            target = line.split()[1].replace("\\040", " ")
            if target == path or target.startswith(path + "/"):
                mounts.append(target)
    for m in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)


def temp_dir(prefix, what):
    """A new directory under the system's temporary directory, removed at
    cleanup (whatever is mounted below it unmounted first)."""
    path = tempfile.mkdtemp(prefix=prefix)

    def remove():
        if os.path.isdir(path):
            unmount_under(path)
            shutil.rmtree(path, ignore_errors=True)
            if os.path.exists(path):
                LEFTOVERS.append(f"directory {path}")
    CLEANUP.push(f"remove {what}", remove)
    return path


# -------------------------------------------------------- the host's state

def host_links(names_only=False):
    """The host network namespace's interfaces, as `ip -o link` lists
    them: index, name and link-layer address of each (a docker0 deleted
    and created again comes back under another index), or their names
    alone, sorted; None if `ip` fails."""
    _, rc, out, _ = call(["ip", "-o", "link", "show"])
    if rc != 0:
        return None
    links = []
    for line in out.splitlines():
        m = re.match(r"(\d+):\s+([^:@\s]+)", line)
        if not m:
            continue
        if names_only:
            links.append(m.group(2))
            continue
        a = re.search(r"link/\S+(?: (\S+))?", line)
        addr = (a.group(1) or "") if a else ""
        links.append(f"{m.group(1)}: {m.group(2)} {addr}".strip())
    return sorted(links) if names_only else links


def host_engine(networks=True):
    """The host engine's swarm state and node ID, and its networks, read
    only (`docker info`, `docker network ls`), or a short reason they
    could not be read."""
    if not shutil.which("docker"):
        return "no docker CLI"
    _, rc, out, err = call(["docker", "info", "--format",
                            "{{.Swarm.LocalNodeState}} {{.Swarm.NodeID}}"], timeout=60)
    if rc != 0:
        return f"unreachable ({err.strip().splitlines()[-1] if err.strip() else rc})"
    state = f"swarm {out.strip()!r}"
    if not networks:
        return state
    _, rc, out, _ = call(["docker", "network", "ls", "--format", "{{.Name}}"], timeout=60)
    nets = " ".join(sorted(out.split())) if rc == 0 else "?"
    return f"{state}, networks {nets}"


class HostWatch:
    """The host's engine and interfaces, read before the run (if
    `enabled`) and compared after it."""

    def __init__(self, enabled, networks=True, names_only=False):
        self.enabled = enabled
        self.networks = networks
        self.names_only = names_only
        self.engine = host_engine(networks) if enabled else None
        self.links = host_links(names_only) if enabled else None

    def check(self, notes):
        """Compares; adds a note; returns whether the host is as it was
        and nothing was left behind."""
        ok = True
        if self.enabled:
            engine = host_engine(self.networks)
            links = host_links(self.names_only)
            if engine != self.engine:
                ok = False
                log(f"HOST ENGINE CHANGED: {self.engine} before, {engine} after")
            if links != self.links:
                ok = False
                log(f"HOST INTERFACES CHANGED: {self.links} before, {links} after")
            notes.append(f"host engine (read only, not used): {self.engine} before and "
                         + ("the same after" if engine == self.engine else f"{engine} after")
                         + "; host interfaces (`ip -o link`"
                         + (", names" if self.names_only else "") + ") "
                         + ("unchanged" if links == self.links else "CHANGED"))
        if LEFTOVERS:
            ok = False
            log("LEFT BEHIND: " + "; ".join(LEFTOVERS))
        return ok


class Session:
    """One run of a benchmark: when it started, the machine's load before
    and after, and the host's state (HostWatch) compared at the end."""

    def __init__(self, docker, networks=True, names_only=False):
        self.host = HostWatch(docker, networks, names_only)
        self.load_before = os.getloadavg()
        self.load_after = None
        self.started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    def run(self, body, notes):
        """Runs body(), then (also when it fails or a signal comes) every
        cleanup action, then checks the host. Exits if body failed;
        returns whether the host is as it was and nothing was left."""
        failed = None
        try:
            body()
        except KeyboardInterrupt:
            failed = "interrupted; everything started was stopped"
        except BenchError as e:
            failed = str(e)
        try:
            CLEANUP.run_all()
        except KeyboardInterrupt:
            failed = failed or "interrupted; everything started was stopped"
        self.load_after = os.getloadavg()
        host_ok = self.host.check(notes)
        if failed:
            sys.exit(f"{NAME}: {failed}" + ("" if host_ok else
                                            "; and the host's engine or interfaces changed"))
        return host_ok

    def load(self):
        return (f"load average {self.load_before[0]:.2f} before, "
                f"{self.load_after[0]:.2f} after")


# ------------------------------------------------------------------ docker

def docker_unavailable(*tools):
    """None if a private dockerd can run here, else why not."""
    for tool in ("docker", "dockerd", "unshare", "ip") + tools:
        if not shutil.which(tool):
            return f"no {tool} on PATH"
    if os.geteuid() != 0:
        return "a private dockerd needs root"
    return None


def netns_of(pid):
    """The network namespace pid is in ("net:[inode]"), or None."""
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


class PrivateNetns:
    """A network namespace of the script's own, loopback only, kept
    alive by a holder process (`unshare --net`) that exits when its
    standard input closes; dockerds enter it with `nsenter --net`."""

    def __init__(self):
        self.ident = None
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c",
             "ip link set lo up && echo up && exec cat >/dev/null"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True)
        CLEANUP.push("docker: remove the private network namespace", self.remove)
        # Until the holder has unshared, /proc/PID/ns/net is the host's:
        # nothing enters it before the holder says loopback is up in the
        # new one, and the two are compared.
        if self.holder.stdout.readline().strip() != "up":
            self.holder.wait()
            raise BenchError("could not create a network namespace (`unshare --net`): "
                             + self.holder.stderr.read().strip())
        self.path = f"/proc/{self.holder.pid}/ns/net"
        self.ident = netns_of(self.holder.pid)
        if self.ident is None or self.ident == netns_of("self"):
            raise BenchError(f"the holder's network namespace {self.ident} is not a new one")

    def wrap(self, cmd):
        """cmd to run in the namespace, behind an nsenter prefix, checked
        again first (the holder must still be in it)."""
        if self.holder.poll() is not None or netns_of(self.holder.pid) != self.ident:
            raise BenchError("the private network namespace's holder is gone")
        return ["nsenter", f"--net={self.path}", "--"] + cmd

    def pids(self):
        """Processes still in the namespace, the holder's aside."""
        found = []
        for p in os.listdir("/proc"):
            if p.isdigit() and int(p) != self.holder.pid and netns_of(p) == self.ident:
                found.append(int(p))
        return found

    def remove(self):
        """Ends every process left in the namespace (all of them were
        started by the script: the dockerds and their containerds), then
        the holder; the namespace goes with its last process."""
        if self.ident is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                left = self.pids()
                if not left:
                    break
                log(f"processes left in the private network namespace: {left}; "
                    f"sending {sig.name}")
                for pid in left:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + 10
                while self.pids() and time.monotonic() < deadline:
                    time.sleep(0.1)
        if self.holder.poll() is None:
            self.holder.stdin.close()
            try:
                self.holder.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.holder.kill()
                self.holder.wait()
        for f in (self.holder.stdin, self.holder.stdout, self.holder.stderr):
            f.close()
        if self.ident is not None:
            LEFTOVERS.extend(f"process {p} in {self.ident}" for p in self.pids())


def unshare_each_start(cmd):
    """cmd in a new network namespace of its own, loopback brought up
    (`unshare --net`): a fresh namespace each time it is started."""
    return ["unshare", "--net", "--", "sh", "-c",
            " ".join(["ip link set lo up && exec"] + cmd)]


class PrivateEngine:
    """One dockerd of the script's own: own data root, exec root, pid
    file, socket and containerd, vfs storage, no bridge, no iptables, an
    empty config file. Never in the host's network namespace: `wrap`
    puts it in one of its own (PrivateNetns.wrap, unshare_each_start),
    because a dockerd started with `--bridge none` deletes docker0, and
    swarm mode creates docker_gwbridge, in whatever namespace it runs in."""

    def __init__(self, root, name, wrap, grace=20):
        self.name = name
        self.wrap = wrap
        self.grace = grace
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, "daemon.json"), "w") as f:
            f.write("{}\n")  # not /etc/docker/daemon.json (sets data-root)
        self.d = ["docker", "-H", f"unix://{os.path.join(self.dir, 'docker.sock')}"]
        self.proc = None
        CLEANUP.push(f"docker: stop the {name} engine", self.stop)

    def start(self):
        t = self.dir
        logf = open(os.path.join(t, "dockerd.log"), "a")
        self.proc = subprocess.Popen(
            self.wrap([
                shutil.which("dockerd"), "--config-file", f"{t}/daemon.json",
                "--data-root", f"{t}/data",
                "--exec-root", f"{t}/exec",
                "--pidfile", f"{t}/docker.pid",
                "-H", f"unix://{t}/docker.sock",
                "--storage-driver", "vfs", "--bridge", "none",
                "--iptables=false", "--ip6tables=false"]),
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            start_new_session=True)
        logf.close()

    def check_running(self):
        if self.proc.poll() is not None:
            raise BenchError(f"the {self.name} dockerd exited {self.proc.returncode}")

    def wait_up(self, timeout=DAEMON_TIMEOUT):
        """Waits until the engine answers `docker info`."""
        def up():
            self.check_running()
            return call(self.d + ["info", "--format", "{{.ID}}"], timeout=60)[1] == 0
        try:
            wait_until(f"the {self.name} dockerd", up, timeout)
        except BenchError as e:
            raise BenchError(f"{e}; log tail:\n{self.log_tail()}") from None

    def swarm_state(self):
        """`docker info`'s swarm state, or None if it does not answer."""
        self.check_running()
        _, rc, out, _ = call(self.d + ["info", "--format", "{{.Swarm.LocalNodeState}}"])
        return out.strip() if rc == 0 else None

    def wait_state(self, want, timeout=DAEMON_TIMEOUT):
        """Waits until the engine answers with swarm state `want`."""
        try:
            wait_until(f"the {self.name} dockerd to answer, swarm {want}",
                       lambda: self.swarm_state() == want, timeout)
        except BenchError as e:
            raise BenchError(f"{e}; log tail:\n{self.log_tail()}") from None

    def stop(self):
        stop_process(self.proc, f"the {self.name} dockerd", grace=self.grace)
        self.proc = None

    def log_tail(self, n=8):
        try:
            with open(os.path.join(self.dir, "dockerd.log")) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def version(self):
        ver = version(self.d + ["version", "--format",
                                "client {{.Client.Version}}, engine {{.Server.Version}}"])
        words = version(["containerd", "--version"]).split()
        if len(words) > 2:
            ver += f", containerd {words[2]}"
        return ver


# -------------------------------------------------------------------- moat

class MoatNode:
    """One `moat daemon --state-dir DIR/name --hostname name`, started at
    once and stopped (SIGTERM, SIGKILL after `grace` seconds) at cleanup;
    restartable."""

    def __init__(self, exe, root, name, grace=20):
        self.exe = exe
        self.name = name
        self.grace = grace
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, mode=0o700)
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.env = dict(os.environ, MOAT_HOST=f"unix://{self.dir}/moat.sock")
        self.proc = None
        self.cleanup_idx = CLEANUP.push(f"moat: stop {name}", self.stop)
        self.start()

    def start(self):
        logf = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [self.exe, "daemon", "--state-dir", self.dir, "--hostname", self.name],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            start_new_session=True)
        logf.close()

    def cli(self, *args, input=None):
        """Runs `moat ARGS` against this daemon; returns (seconds, stdout)."""
        return run([self.exe, *args], env=self.env, input=input)

    def info(self):
        """`moat info --format json`, or None if the daemon does not
        answer (yet)."""
        if self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited {self.proc.returncode}; "
                             f"log tail:\n{self.log_tail()}")
        _, rc, out, _ = call([self.exe, "info", "--format", "json"], env=self.env)
        if rc != 0:
            return None
        try:
            return json.loads(out)
        except ValueError:
            return None

    def wait_up(self, timeout=DAEMON_TIMEOUT):
        """Waits until the daemon answers `moat info`."""
        try:
            wait_until(f"moat daemon {self.name}", lambda: self.info() is not None, timeout)
        except BenchError as e:
            raise BenchError(f"{e}\nlog tail:\n{self.log_tail()}") from None

    def wait_state(self, want, timeout=DAEMON_TIMEOUT):
        """Waits until `moat info` reports the state `want`."""
        seen = []

        def reached():
            st = (self.info() or {}).get("state")
            if not seen or seen[-1] != st:
                seen.append(st)
            return st == want
        try:
            wait_until(f"moat daemon {self.name} to answer, {want}", reached, timeout)
        except BenchError as e:
            raise BenchError(f"{e} (states seen: {seen})\nlog tail:\n{self.log_tail()}") from None

    def init(self, *flags):
        """`moat init --listen-addr 127.0.0.1:0 FLAGS`; returns (seconds,
        the cluster's address, stdout)."""
        dt, out = self.cli("init", *flags, "--listen-addr", "127.0.0.1:0")
        m = re.search(r"MOAT_JOIN_TOKEN=\S+ moat join (\S+)", out)
        if not m:
            raise BenchError(f"`moat init {' '.join(flags)}` printed no join command:\n{out}")
        return dt, m.group(1), out

    def nodes(self):
        """`moat node ls --format json` (on a manager)."""
        _, out = self.cli("node", "ls", "--format", "json")
        return json.loads(out)

    def log_tail(self, n=15):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        stop_process(self.proc, f"moat daemon {self.name}", grace=self.grace)

    def stop_now(self):
        """Stops the daemon now, and not again at cleanup."""
        CLEANUP.run_one(self.cleanup_idx)


# ----------------------------------------------------- command line, report

def arg_parser(description, quick):
    """A parser with the options every script takes; `quick` says what
    --quick does."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--no-docker", action="store_true", help="skip the Docker side (CI)")
    ap.add_argument("--debug", action="store_true",
                    help="use the debug build (target/debug/moat)")
    ap.add_argument("--no-build", action="store_true",
                    help="do not run cargo build; use the binary as it is")
    ap.add_argument("--moat", metavar="PATH", help="the moat binary to use (implies --no-build)")
    return ap


def moat_binary(args, needed=True):
    """Builds moat unless told not to; returns (profile, path of the
    binary). Exits if it is needed and missing."""
    profile = "debug" if args.debug else "release"
    exe = (os.path.abspath(args.moat) if args.moat
           else os.path.join(REPO, "target", profile, "moat"))
    if not args.moat and not args.no_build and needed:
        # Debug: the workspace's binaries with its unified features, as
        # `cargo test --workspace` and CI build them, so nothing recompiles.
        cmd = (["cargo", "build", "--release", "-p", "moat"] if profile == "release"
               else ["cargo", "build", "--workspace", "--bins"])
        log(" ".join(cmd))
        if subprocess.run(cmd, cwd=REPO, stdout=sys.stderr).returncode != 0:
            sys.exit(f"{NAME}: cargo build failed")
    if needed and not os.access(exe, os.X_OK):
        sys.exit(f"{NAME}: no moat binary at {exe}")
    return profile, exe


def p90(xs):
    s = sorted(xs)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def fmt_ms(x):
    ms = x * 1000
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}"


def median_p90(xs):
    """"median (p90)" in ms, or n/a."""
    return f"{fmt_ms(statistics.median(xs))} ({fmt_ms(p90(xs))})" if xs else "n/a"


def comparison_table(header, first, rows, docker, moat, judge):
    """Markdown lines: header, then one line per row (label, docker key
    or None, moat key, target) that has samples — medians (p90), docker /
    moat, and what judge(target, docker samples, moat samples) says:
    (target text, met text, verdict or None). Returns (lines, every
    verdict together, or None)."""
    lines = list(header)
    lines.append(f"| {first} | docker median (p90) ms | moat median (p90) ms "
                 "| docker / moat | target | met |")
    lines.append("|---|---|---|---|---|---|")
    verdict = None
    for label, dkey, mkey, target in rows:
        d = docker.get(dkey, []) if dkey else []
        m = moat.get(mkey, [])
        if not d and not m:
            continue
        ratio = f"{statistics.median(d) / statistics.median(m):.1f}×" if d and m else "—"
        tgt, met, ok = judge(target, d, m)
        if ok is not None:
            verdict = ok if verdict is None else (verdict and ok)
        lines.append(f"| {label} | {median_p90(d) if dkey else 'n/a'} | {median_p90(m)} "
                     f"| {ratio} | {tgt} | {met} |")
    lines.append("")
    return lines, verdict


def machine(short=False):
    """The CPU (and, unless short, the RAM) and kernel, for a report."""
    cpu = "?"
    mem = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
                    break
    except OSError:
        pass
    if short:
        return f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}"
    return f"nproc {os.cpu_count()} ({cpu}), {mem}, Linux {platform.release()}"


def write_report(stem, table, data):
    """The table to stdout and target/STEM.md, data to target/STEM.json."""
    print(table, end="")
    os.makedirs(os.path.join(REPO, "target"), exist_ok=True)
    with open(os.path.join(REPO, "target", f"{stem}.md"), "w") as f:
        f.write(table)
    with open(os.path.join(REPO, "target", f"{stem}.json"), "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
