"""twisted.runner.procmon as a daemon: ``python procmon_daemon.py CONFIG.json``.

procmon ships only a one-command ``twistd procmon`` plugin, so this builds the same
``ProcessMonitor`` for many children: ``{"children": [[name, argv], ...], "threshold": s}``.
Child output is logged through twisted.logger to stdout, as ``twistd -n`` would.
"""
import json
import os
import sys

from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.runner.procmon import ProcessMonitor


def main(path):
    with open(path) as f:
        config = json.load(f)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    monitor = ProcessMonitor(reactor=reactor)
    monitor.minRestartDelay = 0
    monitor.maxRestartDelay = 0
    monitor.threshold = config.get("threshold", 0.001)
    env = dict(os.environ)
    for name, argv in config["children"]:
        monitor.addProcess(name, argv, env=env)
    reactor.callWhenRunning(monitor.startService)
    reactor.addSystemEventTrigger("before", "shutdown", monitor.stopService)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1])
