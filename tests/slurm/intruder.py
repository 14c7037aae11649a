#!/usr/bin/env python3
"""A local user's attempts on cohortd: leader joins of other jobs' steps (claiming to own
them), a join with world size 0, a task report. Speaks the documented framing (a little-endian
u32 length, then JSON). Prints one answer per line; exits 1 if any was not refused."""
import json
import socket
import struct
import sys

sock_path, nodes, first_job, count = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4])
uid = __import__("os").getuid()


def ask(message):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sock_path)

    def send(m):
        body = json.dumps(m).encode()
        s.sendall(struct.pack("<I", len(body)) + body)

    def recv():
        n = struct.unpack("<I", s.recv(4, socket.MSG_WAITALL))[0]
        return json.loads(s.recv(n, socket.MSG_WAITALL))

    send({"type": "hello", "api_version": 1, "client": "intruder"})
    recv()
    send(message)
    answer = recv()
    s.close()
    return answer


answers = []
for job in range(first_job, first_job + count):
    join = {"type": "join", "job_id": job, "step_id": 0, "attempt": 0, "nodes": nodes,
            "node_index": 0, "ranks": [0], "world_size": len(nodes), "gpus": [],
            "timeout_ms": 60000, "uid": uid}
    answers.append(ask(join))
    answers.append(ask(dict(join, world_size=0, ranks=[])))
    answers.append(ask({"type": "task_exit", "job_id": job, "step_id": 0, "attempt": 0,
                        "rank": 0, "status": 9, "uid": uid}))
for a in answers:
    print(json.dumps(a))
sys.exit(0 if all(a.get("code") == "permission_denied" for a in answers) else 1)
