"""twistd plugins for the supervision target, the dashboard relay and the fleet gateway.

All are lazy: nothing here imports the reactor or the implementation modules,
which are loaded only when twistd actually runs the named plugin.
"""

from twisted.application.service import ServiceMaker

supervisorTarget = ServiceMaker(
    "supervisor-target",
    "supervisor.target.tap",
    "Run a supervision tree described by a YAML file.",
    "supervisor-target",
)

supervisorRelay = ServiceMaker(
    "supervisor-relay",
    "supervisor.relay.tap",
    "Run the dashboard relay (registration, wss:// sessions, audit).",
    "supervisor-relay",
)

supervisorFleet = ServiceMaker(
    "supervisor-fleet",
    "supervisor.fleet.tap",
    "Run the fleet gateway (every host's targets over NATS, wss:// sessions, audit).",
    "supervisor-fleet",
)
