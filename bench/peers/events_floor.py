"""The event-delivery floor: ``python events_floor.py CONFIG.json``, no framework at all.

One epoll loop over a Unix listening socket, each child's pidfd and its output pipe. Each
child is started with ``os.posix_spawn(setsid=True)`` and its output read and thrown away;
on its exit the loop reaps it, writes one NDJSON line ``{"type": "event", "event":
{"event_type": "child_exited", "child_id": NAME}}`` to every subscriber (a subscriber sends
one request line first and is answered ``{"ok": true}``, as ours is) and then starts it
again. What a supervisor does between a child's exit and its subscriber's read can be no
less than this. Config: ``{"socket": PATH, "children": [[name, argv], ...]}``.
"""
import json
import os
import select
import signal
import socket
import sys

#: Longest subscribe request line read; a connection that sends more is closed.
MAX_REQUEST_BYTES = 65536


def main(path):
    with open(path) as f:
        config = json.load(f)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(config["socket"])
    listener.listen(16)
    poll = select.epoll()
    poll.register(listener.fileno(), select.EPOLLIN)
    watched = {}  # fd -> ("exit", name, pid) | ("out", name) | ("sub", socket, request bytes)
    subscribers = []

    def start(name, argv):
        read_end, write_end = os.pipe()
        pid = os.posix_spawn(argv[0], argv, os.environ, setsid=True,
                             file_actions=[(os.POSIX_SPAWN_DUP2, write_end, 1),
                                           (os.POSIX_SPAWN_DUP2, write_end, 2)])
        os.close(write_end)
        pidfd = os.pidfd_open(pid)
        watched[pidfd] = ("exit", name, pid)
        watched[read_end] = ("out", name)
        poll.register(pidfd, select.EPOLLIN)
        poll.register(read_end, select.EPOLLIN)

    programs = {name: argv for name, argv in config["children"]}
    for name, argv in programs.items():
        start(name, argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            for fd, _ in poll.poll():
                if fd == listener.fileno():
                    conn, _ = listener.accept()
                    watched[conn.fileno()] = ("sub", conn, b"")
                    poll.register(conn.fileno(), select.EPOLLIN)
                    continue
                kind = watched.get(fd)
                if kind is None:
                    continue
                if kind[0] == "out":
                    if not os.read(fd, 65536):
                        poll.unregister(fd)
                        os.close(fd)
                        del watched[fd]
                elif kind[0] == "sub":
                    conn, received = kind[1], kind[1].recv(65536)
                    buffered = kind[2] + received
                    if not received or len(buffered) > MAX_REQUEST_BYTES:  # gone, or no request
                        poll.unregister(fd)
                        del watched[fd]
                        conn.close()
                    elif b"\n" in buffered:
                        request = json.loads(buffered.split(b"\n", 1)[0])
                        conn.sendall(json.dumps({"request_id": request.get("request_id"),
                                                 "ok": True}).encode() + b"\n")
                        poll.unregister(fd)
                        del watched[fd]
                        subscribers.append(conn)
                    else:
                        watched[fd] = ("sub", conn, buffered)
                else:
                    _, name, pid = kind
                    poll.unregister(fd)
                    os.close(fd)
                    del watched[fd]
                    os.waitpid(pid, 0)
                    line = json.dumps({"type": "event", "event": {
                        "event_type": "child_exited", "child_id": name}}).encode() + b"\n"
                    for conn in list(subscribers):
                        try:
                            conn.sendall(line)
                        except OSError:  # the subscriber went away
                            subscribers.remove(conn)
                            conn.close()
                    start(name, programs[name])
    finally:
        for kind in watched.values():
            if kind[0] == "exit":
                try:
                    os.killpg(kind[2], signal.SIGKILL)
                except ProcessLookupError:
                    pass


if __name__ == "__main__":
    main(sys.argv[1])
