"""The status floor: a bare Twisted server on a Unix socket that answers every request line
with the same bytes (our target's own reply, captured): ``python status_floor.py SOCKET FILE``.

Timed with the same client as our target, it is what any Twisted server pays to answer with
that reply, so the distance from it is what our ``status`` itself costs.
"""
import sys

from twisted.internet import protocol, reactor


class Canned(protocol.Protocol):
    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            _, _, self.buffer = self.buffer.partition(b"\n")
            self.transport.write(self.reply)


def main(path: str, reply_file: str) -> None:
    with open(reply_file, "rb") as f:
        reply = f.read()
    reactor.listenUNIX(path, protocol.Factory.forProtocol(lambda: Canned(reply)))
    print("ready", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
