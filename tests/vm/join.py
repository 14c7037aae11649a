"""Joins a step's gang start through this node's cohortd, as the SPANK plugin does from
slurmstepd, for the VM tests (tests/vm/gang.sh): the local API's Hello then Join over the Unix
socket (a little-endian u32 length, then JSON), and prints the answer as shell assignments:
COHORT_PLAN (the plan, written to PLAN_PATH), COHORT_STORE, COHORT_SECRET.

    python3 join.py SOCKET PLAN_PATH JOB NODES NODE_INDEX RANKS WORLD_SIZE
"""

import json
import socket
import struct
import sys


def send(sock, message):
    body = json.dumps(message).encode()
    sock.sendall(struct.pack("<I", len(body)) + body)


def receive(sock):
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise SystemExit("join.py: cohortd closed the connection")
            data += chunk
        return data

    (length,) = struct.unpack("<I", exactly(4))
    return json.loads(exactly(length))


def main():
    path, plan_path, job, nodes, index, ranks, world = sys.argv[1:8]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(300)
    sock.connect(path)
    send(sock, {"type": "hello", "api_version": 1, "client": "tests/vm/join.py"})
    hello = receive(sock)
    if hello.get("type") != "hello":
        raise SystemExit(f"join.py: hello refused: {hello}")
    send(sock, {
        "type": "join",
        "job_id": int(job),
        "step_id": 0,
        "attempt": 0,
        "nodes": nodes.split(","),
        "node_index": int(index),
        "ranks": [int(r) for r in ranks.split(",")],
        "world_size": int(world),
        "gpus": [],
        "timeout_ms": 120000,
        "uid": 0,
    })
    answer = receive(sock)
    if answer.get("type") != "joined":
        raise SystemExit(f"join.py: the join failed: {answer}")
    with open(plan_path, "w") as out:
        json.dump(answer["plan"], out)
    print(f"COHORT_PLAN={plan_path}")
    print(f"COHORT_STORE={answer['store']}")
    print(f"COHORT_SECRET={answer['secret']}")


if __name__ == "__main__":
    main()
