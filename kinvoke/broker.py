"""The Kafka broker that `kinvoke dev`, `kinvoke broker` and the tests start.

- `KafkaBroker` (the default): Apache Kafka, single node KRaft (broker and controller in one JVM),
  run from the jars `scripts/setup.sh` fetched with Maven (`scripts/kafka/pom.xml`) with the
  machine's Java (>= 17).
- `LocalBroker` (`--broker local`): the pip-only emulator noida-db, for machines without Java.
  It is not the reference broker (see ../shared/kafka-broker.md for what it gets wrong).

Both listen on loopback only and have the same interface: `start()`, `stop()`, `bootstrap`,
`pid`, and a restart (`stop()` then `start()`) keeps the data directory and ports.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import IO, Protocol

import structlog
from confluent_kafka.admin import AdminClient

from schemas.settings import DEFAULT_MAX_RECORD_BYTES, topic_max_message_bytes

log = structlog.get_logger(__name__)

KAFKA_VERSION = "4.4.0"  # = scripts/kafka/pom.xml and the apache/kafka image in docker-compose.yml
MIN_JAVA = 17
REPO = Path(__file__).resolve().parents[1]
KAFKA_LIBS = REPO / ".kinvoke" / "kafka-libs"  # written by scripts/setup.sh
KAFKA_LOG4J2 = REPO / "scripts" / "kafka" / "log4j2.properties"
KAFKA_STATE_FILE = "kinvoke-kafka.json"  # in a KafkaBroker's data dir: its controller port, cluster id

BROKER_KINDS = ("kafka", "local")
# SASL test users: put as they are into JAAS strings and `--add-scram` arguments.
_JAAS_SAFE = re.compile(r"[A-Za-z0-9._-]+")
# Where `kinvoke dev` / `kinvoke broker` keep each broker's data unless KINVOKE_BROKER_DATA_DIR says
# otherwise: the two brokers' storage formats have nothing in common.
DEFAULT_DATA_DIRS = {"kafka": ".kinvoke/kafka", "local": ".kinvoke/broker"}


class BrokerError(RuntimeError):
    """The broker cannot be started; the message says why (and what to do)."""


class Broker(Protocol):
    data_dir: Path
    port: int
    log_file: Path | None

    @property
    def bootstrap(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def start(self, timeout_s: float = ...) -> Broker: ...

    def stop(self, timeout_s: float = ...) -> None: ...

    def kill(self) -> None: ...

    def restart(self, timeout_s: float = ...) -> None: ...

    def is_running(self) -> bool: ...


def start_broker(
    kind: str, data_dir: Path, port: int, log_file: Path | None = None, timeout_s: float = 60.0
) -> Broker:
    """Start the broker `Settings.broker` names: "kafka" (Apache Kafka) or "local" (the emulator)."""
    broker: Broker
    if kind == "kafka":
        broker = KafkaBroker(data_dir=data_dir, port=port, log_file=log_file)
    elif kind == "local":
        broker = LocalBroker(data_dir=data_dir, port=port, log_file=log_file)
    else:
        raise BrokerError(f"unknown broker {kind!r}: expected one of {', '.join(BROKER_KINDS)}")
    return broker.start(timeout_s)


def wait_for_broker(
    bootstrap: str,
    timeout_s: float = 20.0,
    proc: subprocess.Popen[bytes] | None = None,
    client_properties: dict[str, str] | None = None,
) -> None:
    """Until the broker answers a metadata request; stops early if `proc` (the broker) exits.
    `client_properties`: what a client needs to be let in (a SASL listener's credentials)."""
    deadline = time.monotonic() + timeout_s
    host, _, port = bootstrap.rpartition(":")
    # Wait for the port first: librdkafka would print a line per refused connection meanwhile.
    while not _listening(host, int(port)):
        _check_alive(proc)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"Kafka broker at {bootstrap} did not listen within {timeout_s}s")
        time.sleep(0.1)
    admin = AdminClient({**(client_properties or {}), "bootstrap.servers": bootstrap})
    last: Exception | None = None
    while time.monotonic() < deadline:
        _check_alive(proc)
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
            time.sleep(0.1)
    raise TimeoutError(f"Kafka broker at {bootstrap} did not answer within {timeout_s}s: {last}")


class _BrokerExited(Exception):
    pass


def _check_alive(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is not None:
        raise _BrokerExited(f"the broker process exited with code {proc.returncode}")


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def log_tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return "(no broker log)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(text) or "(broker log is empty)"


@dataclass
class _Process:
    """What both brokers share: one child process in its own process group, a log file."""

    data_dir: Path
    port: int = 9092
    host: str = "127.0.0.1"
    log_file: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    name = "broker"  # in log events
    title = "the broker"  # in messages

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def client_properties(self) -> dict[str, str]:
        """librdkafka properties a client needs besides the bootstrap (none: a PLAINTEXT listener)."""
        return {}

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _check_port(self) -> None:
        if _listening(self.host, self.port):
            raise BrokerError(
                f"cannot start {self.title} on {self.bootstrap}: something already listens there "
                "(another broker? choose another port with KINVOKE_BROKER_PORT)"
            )

    def _spawn(self, cmd: list[str]) -> None:
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child, closed below
            out.write(f"--- kinvoke: starting {self.title} on {self.bootstrap} at {time.ctime()}\n".encode())
            out.flush()
        try:
            self._proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        finally:
            if not isinstance(out, int):
                out.close()
        log.info(
            f"{self.name}.starting", pid=self._proc.pid, bootstrap=self.bootstrap, data_dir=str(self.data_dir)
        )

    def _wait_ready(self, timeout_s: float) -> None:
        started = time.monotonic()
        try:
            wait_for_broker(self.bootstrap, timeout_s, self._proc, self.client_properties)
        except BaseException as e:  # also Ctrl-C: never leave a half-started broker behind
            self.stop()
            if not isinstance(e, TimeoutError | _BrokerExited):
                raise
            raise BrokerError(
                f"{self.title} did not start on {self.bootstrap}: {e}\n"
                f"--- last lines of {self.log_file or 'its log'}:\n{log_tail(self.log_file)}"
            ) from None
        log.info(
            f"{self.name}.started", bootstrap=self.bootstrap, seconds=round(time.monotonic() - started, 1)
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (a clean shutdown: the broker flushes and closes its logs), SIGKILL to the
        process group after `timeout_s`."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning(f"{self.name}.kill", pid=proc.pid, after_s=timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.info(f"{self.name}.stopped", bootstrap=self.bootstrap, code=proc.returncode)
        if self.log_file is not None and self.log_file.exists():
            with open(self.log_file, "a") as f:
                f.write(f"--- kinvoke: {self.title} stopped (exit {proc.returncode}) at {time.ctime()}\n")

    def kill(self) -> None:
        """SIGKILL, no clean shutdown (fault tests)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self, timeout_s: float = 60.0) -> None:
        self.stop()
        self.start(timeout_s)

    def start(self, timeout_s: float = 60.0) -> _Process:  # pragma: no cover - overridden
        raise NotImplementedError


# --- Apache Kafka ------------------------------------------------------------------------------


def find_java() -> str:
    """$JAVA_HOME/bin/java if set, else java on PATH (what Kafka's own scripts do); Java >= 17."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() else None
    java = java or shutil.which("java")
    if java is None:
        raise BrokerError(
            f"Apache Kafka needs Java >= {MIN_JAVA} and no `java` was found; install it and run "
            "./scripts/setup.sh, or use the emulator: --broker local (KINVOKE_BROKER=local)"
        )
    major = java_major_version(java)
    if major is None or major < MIN_JAVA:
        raise BrokerError(
            f"Apache Kafka needs Java >= {MIN_JAVA}, {java} is version {major or 'unknown'}; "
            "set JAVA_HOME to a newer one, or use the emulator: --broker local (KINVOKE_BROKER=local)"
        )
    return java


def java_major_version(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(?:1\.)?(\d+)', out.stderr + out.stdout)
    return int(m.group(1)) if m else None


def check_kafka_libs(libs: Path = KAFKA_LIBS) -> Path:
    if not (libs / "COMPLETE").exists() or not list(libs.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        raise BrokerError(
            f"Apache Kafka {KAFKA_VERSION} is not installed in {libs}: run ./scripts/setup.sh "
            "(needs Java >= 17 and Maven), or use the emulator: --broker local (KINVOKE_BROKER=local)"
        )
    return libs


def random_cluster_id() -> str:
    """What `kafka-storage.sh random-uuid` prints: 16 random bytes, base64url without padding,
    never starting with '-' (it would read as an option)."""
    while True:
        s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not s.startswith("-"):
            return s


@dataclass
class KafkaBroker(_Process):
    """Apache Kafka, one node that is broker and controller (KRaft), on loopback.

    In `data_dir`: `logs/` (Kafka's log.dirs: topics and the metadata log), `server.properties`
    (rewritten at every start) and `kinvoke-kafka.json`, which remembers the cluster id and the
    controller port: the storage is formatted once, on the first start, and records the
    controller's endpoint, so restarts use the same one.

    `sasl_users` (user -> password; empty by default) makes the client listener SASL_PLAINTEXT
    instead of PLAINTEXT, for tests against a Kafka that wants credentials: SASL/PLAIN and
    SASL/SCRAM-SHA-256 for these users (the SCRAM credentials are written when the storage is
    formatted, on the first start); the first user is the broker's own, between its listeners.
    The controller listener stays PLAINTEXT. `extra_properties` go over the generated
    server.properties.
    """

    # Kafka's own default (kafka-server-start.sh). 512 MB was not enough: with Restate's 32 MiB
    # bodies the old generation stayed full for tens of seconds while 30 MiB records went through
    # (produce buffers, the log cleaner's read and write buffers), and on a slower machine the
    # broker stopped answering.
    heap: str = "1g"
    libs: Path = KAFKA_LIBS
    log4j2: Path = KAFKA_LOG4J2
    sasl_users: dict[str, str] = field(default_factory=dict)
    extra_properties: dict[str, str] = field(default_factory=dict)

    name = "kafka"
    title = "Apache Kafka"

    @property
    def state_file(self) -> Path:
        return self.data_dir / KAFKA_STATE_FILE

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def client_properties(self) -> dict[str, str]:
        """With `sasl_users`: the broker's own user over SASL/PLAIN."""
        if not self.sasl_users:
            return {}
        user, password = next(iter(self.sasl_users.items()))
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "PLAIN",
            "sasl.username": user,
            "sasl.password": password,
        }

    def _sasl_properties(self, h: str, p: int, c: object) -> dict[str, str]:
        """The client listener as SASL_PLAINTEXT (KIP-103 per-listener JAAS settings, KRaft: the
        controller listener keeps PLAINTEXT, the broker talks to itself over the SASL listener)."""
        for user, password in self.sasl_users.items():
            if not _JAAS_SAFE.fullmatch(user) or not _JAAS_SAFE.fullmatch(password):
                raise BrokerError(f"SASL user {user!r}: names and passwords take only {_JAAS_SAFE.pattern}")
        user, password = next(iter(self.sasl_users.items()))
        plain_users = " ".join(f'user_{u}="{pw}"' for u, pw in self.sasl_users.items())
        return {
            "listeners": f"SASL_PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
            "advertised.listeners": f"SASL_PLAINTEXT://{h}:{p}",
            "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{user}" password="{password}" {plain_users};'
            ),
            "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{user}" password="{password}";'
            ),
        }

    @property
    def controller_port(self) -> int | None:
        if not self.state_file.exists():
            return None
        return int(json.loads(self.state_file.read_text())["controller_port"])

    def start(self, timeout_s: float = 60.0) -> KafkaBroker:
        if self.is_running():
            return self
        java = find_java()
        libs = check_kafka_libs(self.libs)
        self._check_port()
        self.data_dir = self.data_dir.resolve()
        state = self._state()
        props = self._write_properties(state["controller_port"])
        classpath = f"{libs}/*"
        if not (self.log_dirs / "meta.properties").exists():
            self._format(java, classpath, props, state["cluster_id"])
        self._spawn(
            [
                java,
                f"-Xmx{self.heap}",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.log4j2}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(props),
            ]
        )
        self._wait_ready(timeout_s)
        return self

    def _state(self) -> dict[str, object]:
        """The cluster id and controller port of this data dir, chosen on the first start."""
        if self.state_file.exists():
            state = json.loads(self.state_file.read_text())
            cport = int(state["controller_port"])
            if _listening(self.host, cport):
                raise BrokerError(
                    f"cannot start Apache Kafka from {self.data_dir}: its controller port {cport} "
                    f"(chosen on its first start, recorded in the storage) is taken by another process"
                )
            return state
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if any(p != self.log_file for p in self.data_dir.iterdir()):
            raise BrokerError(
                f"{self.data_dir} is not empty and holds no Apache Kafka data of kinvoke (the emulator's "
                "data?): give Apache Kafka its own directory (KINVOKE_BROKER_DATA_DIR)"
            )
        # The controller listens next to the broker if it can.
        cport = self.port + 1
        if self.port >= 65535 or not _port_free(self.host, cport) or _listening(self.host, cport):
            cport = _free_port(self.host)
        state = {"cluster_id": random_cluster_id(), "controller_port": cport, "kafka_version": KAFKA_VERSION}
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")
        return state

    def _write_properties(self, controller_port: object) -> Path:
        h, p, c = self.host, self.port, controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{h}:{c}",
            "listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
            "advertised.listeners": f"PLAINTEXT://{h}:{p}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.log_dirs),
            # One node: internal topics with one replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # A development and test broker: no wait before the first rebalance, session timeouts
            # down to 1 s allowed (tests may use short ones), timed-out transactions (a killed
            # processor's) aborted within a second of their timeout instead of 10 s.
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            # KRaft appends a no-op record to the metadata log when idle (every 500 ms by
            # default) so metadata readers see progress; one node needs it far less often.
            "metadata.max.idle.interval.ms": "5000",
            # The log cleaner's dedupe buffer is on the heap (default 128 MB).
            "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
            # Records up to KINVOKE_MAX_RECORD_BYTES's default (Restate's 32 MiB bodies) on every
            # topic, not only on kinvoke's own (they get it as a topic config): a subscription's
            # source topic, topics created on first use.
            "message.max.bytes": str(topic_max_message_bytes(DEFAULT_MAX_RECORD_BYTES)),
            # Topics the clients produce to are created on first use (Kafka's default, kept).
            "auto.create.topics.enable": "true",
            "num.partitions": "1",
        }
        if self.sasl_users:
            props.update(self._sasl_properties(h, p, c))
        props.update(self.extra_properties)
        path = self.data_dir / "server.properties"
        path.write_text(
            "# Written by kinvoke/broker.py at every start; edits are lost.\n"
            + "".join(f"{k}={v}\n" for k, v in props.items())
        )
        return path

    def _format(self, java: str, classpath: str, props: Path, cluster_id: object) -> None:
        """Format the storage once (a single-voter KRaft quorum: --standalone)."""
        cmd = [java, f"-Dlog4j2.configurationFile={self.log4j2}", "-cp", classpath]
        cmd += ["kafka.tools.StorageTool", "format", "--standalone", "-t", str(cluster_id), "-c", str(props)]
        for user, password in self.sasl_users.items():  # KIP-900: SCRAM users in the bootstrap metadata
            cmd += ["--add-scram", f"SCRAM-SHA-256=[name={user},password={password}]"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_file, "a") as f:
                f.write(f"--- kinvoke: formatting {self.log_dirs}\n{out.stdout}{out.stderr}")
        if out.returncode != 0:
            raise BrokerError(
                f"formatting Apache Kafka's storage in {self.log_dirs} failed (exit {out.returncode}):\n"
                f"{out.stdout}{out.stderr}"
            )


# --- the emulator ------------------------------------------------------------------------------


def broker_binary() -> Path:
    try:
        return Path(str(files("noida_db").joinpath("noida-db")))
    except ModuleNotFoundError as e:  # pragma: no cover - install problem
        raise BrokerError("the local broker is not installed: pip install 'kinvoke[broker]'") from e


@dataclass
class LocalBroker(_Process):
    """noida-db, the pip-only Kafka emulator. We run the binary shipped inside the wheel directly:
    the `noida-db` console script is a wrapper whose child survives a kill of the wrapper. SIGTERM
    makes it save its state (a SIGKILL loses the last ~0.5 s of acknowledged writes)."""

    name = "emulator"
    title = "the broker emulator (noida-db)"

    def start(self, timeout_s: float = 60.0) -> LocalBroker:
        if self.is_running():
            return self
        if (self.data_dir / KAFKA_STATE_FILE).exists():
            raise BrokerError(
                f"{self.data_dir} holds Apache Kafka's data: give the emulator its own directory "
                "(KINVOKE_BROKER_DATA_DIR)"
            )
        self._check_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            [
                str(broker_binary()),
                "start",
                "--only",
                "kafka",
                "--host",
                self.host,
                "--kafka-port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
            ]
        )
        self._wait_ready(timeout_s)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        super().stop(timeout_s)
