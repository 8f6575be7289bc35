"""supervisord configs translated key by key, and the result run under twistd."""

from __future__ import annotations

import io
import json
import os
import pathlib
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest
import yaml

from supervisor.migrate import main, translate
from tests.waiting import wait_until

TWISTD = str(pathlib.Path(sys.executable).parent / "twistd")
#: The workers run as user nobody, who cannot read the test interpreter under /root.
SYSTEM_PYTHON = "/usr/bin/python3"

QUEUE_WORKER = """\
[program:laravel-worker]
process_name=%(program_name)s_%(process_num)02d
command=php /var/www/html/artisan queue:work sqs --sleep=3 --tries=3 --max-time=3600
autostart=true
autorestart=true
stopasgroup=true
killasgroup=true
user=www-data
numprocs=8
redirect_stderr=true
stdout_logfile=/var/www/html/worker.log
stopwaitsecs=3600
"""


@pytest.fixture
def workdir():
    folder = tempfile.mkdtemp(prefix="mig", dir="/tmp")
    yield pathlib.Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


def run(path: pathlib.Path) -> tuple[int, dict, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main([str(path)], out, err)
    return status, yaml.safe_load(out.getvalue()), out.getvalue(), err.getvalue()


def test_the_queue_worker_translates_key_by_key(workdir):
    conf = workdir / "supervisord.conf"
    conf.write_text(QUEUE_WORKER)
    status, config, text, err = run(conf)
    assert status == 0
    assert config["children"] == [{
        "name": "laravel-worker", "kind": "process", "numprocs": 8,
        "process_name": "{name}_{index:02d}",
        "command": ["php", "/var/www/html/artisan", "queue:work", "sqs", "--sleep=3", "--tries=3",
                    "--max-time=3600"],
        "restart_policy": "permanent", "startsecs": 1,
        "stop_as_group": True, "kill_as_group": True,
        "shutdown": {"graceful_timeout_ms": 3_600_000}, "user": "www-data",
        "log_file": {"path": "/var/www/html/worker.log"},
    }]
    # nothing is left untranslated; what differs is said as notes
    assert "# Note: [program:laravel-worker] redirect_stderr: both streams are recorded" in text
    assert "# Note: [program:laravel-worker] stdout_logfile: every instance appends" in text
    assert "not translated" not in err
    assert main(["--strict", str(conf)], io.StringIO(), io.StringIO()) == 0
    # sizes and backups as supervisord writes them
    conf.write_text(QUEUE_WORKER.replace("numprocs=8", "numprocs=1").replace(
        "stdout_logfile=/var/www/html/worker.log",
        "stdout_logfile=/var/log/%(program_name)s.log\nstdout_logfile_maxbytes=50MB\n"
        "stdout_logfile_backups=3"))
    status, config, text, err = run(conf)
    assert config["children"][0]["log_file"] == {
        "path": "/var/log/laravel-worker.log", "max_bytes": 50 * 1024 * 1024, "backups": 3}
    for value in ("NONE", "AUTO"):
        conf.write_text(QUEUE_WORKER.replace("/var/www/html/worker.log", value))
        status, config, text, err = run(conf)
        assert "log_file" not in config["children"][0]
        assert ("stdout_logfile: AUTO has no equivalent" in err) is (value == "AUTO")


def test_expansions_groups_includes_and_supervisord_defaults(workdir, monkeypatch):
    (workdir / "conf.d").mkdir()
    (workdir / "conf.d" / "extra.conf").write_text(textwrap.dedent("""\
        [program:cron]
        command=/usr/sbin/cron -f
        umask=022
        [group:batch]
        programs=cron,ghost
        priority=50
        """))
    conf = workdir / "supervisord.conf"
    conf.write_text(textwrap.dedent("""\
        [supervisord]
        environment=TZ="UTC",MODE=prod
        minfds=4096
        [program:web]
        command=/srv/bin/serve --port=%(ENV_PORT)s --root=%(here)s/www --name %(program_name)s --pct=100%% ${LITERAL}
        directory=%(here)s
        environment=A="1",B="%(ENV_HOME)s/x"
        autostart=false
        autorestart=unexpected
        startsecs=5
        startretries=7
        exitcodes=0,2
        stopsignal=HUP
        priority=10
        [program:pool]
        command=/srv/bin/pool --slot %(process_num)d --json '{"a":1}' --shell '${SHELL_VAR}'
        numprocs=2
        numprocs_start=1
        process_name=%(group_name)s-%(process_num)s
        stopasgroup=true
        serverurl=AUTO
        [include]
        files=conf.d/*.conf
        """))
    result = translate(str(conf))
    web, pool, batch = result.config["children"]
    assert web == {
        "name": "web", "kind": "process",
        "command": ["/srv/bin/serve", "--port=${PORT}", f"--root={workdir}/www", "--name", "web",
                    "--pct=100%", "$${LITERAL}"],
        "cwd": str(workdir), "environment": {"TZ": "UTC", "MODE": "prod", "A": "1", "B": "${HOME}/x"},
        "restart_policy": "transient", "hold": "paused", "priority": 10, "startsecs": 5,
        "startretries": 7, "exitcodes": [0, 2], "stop_signal": "SIGHUP",
        "stop_as_group": False, "kill_as_group": False, "shutdown": {"graceful_timeout_ms": 10_000},
    }
    # in a numprocs child the instance template is ours: braces doubled, the slot is {index}
    assert pool["numprocs"] == 2 and pool["numprocs_start"] == 1
    assert pool["process_name"] == "pool-{index}"
    assert pool["command"] == ["/srv/bin/pool", "--slot", "{index}", "--json", '{{"a":1}}',
                               "--shell", "$${{SHELL_VAR}}"]
    assert (pool["stop_as_group"], pool["kill_as_group"]) == (True, True)
    assert batch == {"name": "batch", "kind": "supervisor", "priority": 50, "children": [{
        "name": "cron", "kind": "process", "command": ["/usr/sbin/cron", "-f"],
        "environment": {"TZ": "UTC", "MODE": "prod"}, "restart_policy": "transient",
        "startsecs": 1, "stop_as_group": False, "kill_as_group": False,
        "shutdown": {"graceful_timeout_ms": 10_000}, "umask": "022"}]}
    assert result.files == [str(conf), str(workdir / "conf.d" / "extra.conf")]
    assert sorted(result.untranslated) == [
        "[group:batch] programs: no [program:ghost]",
        "[program:pool] serverurl: no equivalent",
        "[supervisord] minfds: no equivalent",
    ]
    # and the translation loads as our config, with instances named as supervisord named them
    from supervisor.config.target import parse_target_config

    monkeypatch.setenv("PORT", "8000")
    spec = parse_target_config(result.config, str(workdir)).spec
    assert spec.children[0].command[1] == "--port=8000"
    assert spec.children[0].command[-1] == "${LITERAL}"  # a shell's reference stays the shell's
    instances = spec.children[1].children
    assert [c.name for c in instances] == ["pool-1", "pool-2"]
    assert instances[1].command[2:] == ("2", "--json", '{"a":1}', "--shell", "${SHELL_VAR}")


def test_an_unreadable_value_is_one_error_line(workdir):
    conf = workdir / "supervisord.conf"
    conf.write_text("[program:x]\ncommand=/bin/true\nautorestart=sometimes\n")
    err = io.StringIO()
    assert main([str(conf)], io.StringIO(), err) == 1
    assert err.getvalue() == "error: [program:x] autorestart: 'sometimes' is not true, false or unexpected\n"


def ctl(folder: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supervisor.ctl", "--config", str(folder / "tree.yaml"),
                           *args], capture_output=True, text=True, timeout=60)


def test_a_translated_config_of_several_programs_runs_under_twistd(workdir):
    worker = workdir / "worker.py"
    worker.write_text(textwrap.dedent("""\
        import os, signal, sys, time
        signal.signal(signal.SIGHUP, lambda *a: print("reopened", sys.argv[1], flush=True))
        print("worker", sys.argv[1], os.environ["QUEUE"], os.getuid(), flush=True)
        while True:
            time.sleep(1)
        """))
    worker.chmod(0o755)
    workdir.chmod(0o755)  # user nobody runs the workers from here
    conf = workdir / "supervisord.conf"
    conf.write_text(textwrap.dedent(f"""\
        [unix_http_server]
        file=%(here)s/s.sock

        [supervisord]
        nodaemon=true
        environment=QUEUE="%(ENV_MIGRATE_QUEUE)s"

        [program:worker]
        process_name=%(program_name)s_%(process_num)02d
        command=/bin/sh -c "exec {SYSTEM_PYTHON} %(here)s/worker.py %(program_name)s_%(process_num)02d"
        numprocs=3
        user=nobody
        stopasgroup=true
        killasgroup=true
        stopwaitsecs=5
        redirect_stderr=true
        stdout_logfile=%(here)s/worker.log

        [program:ticker]
        command={sys.executable} -u -c "import time; [print('tick', flush=True) or time.sleep(0.2) for _ in iter(int, 1)]"
        priority=5
        autorestart=true

        [program:oneshot]
        command=/bin/sh -c "echo once; exit 0"
        autorestart=unexpected
        startsecs=0
        """))
    (workdir / "tree.yaml").write_text(subprocess.run(
        [sys.executable, "-m", "supervisor.migrate", str(conf)], capture_output=True, text=True,
        check=True).stdout)
    env = {**os.environ, "MIGRATE_QUEUE": "emails"}
    proc = subprocess.Popen([TWISTD, "-n", "--pidfile", str(workdir / "t.pid"), "supervisor-target",
                             "--config", str(workdir / "tree.yaml")],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (workdir / "s.sock").exists(), 30, "IPC socket")

        def rows() -> dict[str, dict]:
            state = json.loads(ctl(workdir, "--json", "status").stdout)
            return {r["child_path"]: r for r in state["runtime_state"]}

        paths = [f"/root/worker/worker_0{i}" for i in range(3)]
        wait_until(lambda: all(rows().get(p, {}).get("lifecycle_state") == "running" for p in paths)
                   and rows()["/root/oneshot"]["lifecycle_state"] == "completed", 30, "all up")
        logs = ctl(workdir, "logs", "--lines", "200").stdout
        for i in range(3):
            assert f"worker worker_0{i} emails {pwd.getpwnam('nobody').pw_uid}" in logs
        assert "once" in logs and "tick" in logs
        before = rows()
        restarted = ctl(workdir, "restart", "worker:*", "--reason", "deploy")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        wait_until(lambda: all(rows()[p]["lifecycle_state"] == "running" for p in paths), 30, "back")
        after = rows()
        assert [after[p]["generation"] for p in paths] == [before[p]["generation"] + 1 for p in paths]
        assert after["/root/ticker"]["generation"] == before["/root/ticker"]["generation"]
        signalled = ctl(workdir, "signal", "HUP", "worker:*")
        assert signalled.returncode == 0, signalled.stdout + signalled.stderr
        assert signalled.stdout.splitlines()[1:] == [f"  HUP -> {p}" for p in paths]
        wait_until(lambda: ctl(workdir, "logs", "--lines", "200").stdout.count("reopened") == 3, 30,
                   "three workers reopened their logs")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    # twistd re-raises the signal it stopped on
    assert proc.returncode in (0, -signal.SIGTERM), out.decode(errors="replace")[-3000:]
    assert b"Traceback" not in out
