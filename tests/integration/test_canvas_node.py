"""Another language builds a chain with a raw XADD (docs/wire.md): a Node.js producer,
with the ``redis`` and ``@msgpack/msgpack`` npm packages installed into a temp dir."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest

from engine import AsyncResult
from engine.canvas.plan import child_id
from tests.integration.canvas_helpers import APP, capp  # noqa: F401

PRODUCER = r"""
const { createClient } = require('redis');
const { encode, decode } = require('@msgpack/msgpack');
const [socketPath, prefix, firstId, lastId] = process.argv.slice(2);
const sig = (task, args, options = {}) => ({ task, args, kwargs: {}, options, immutable: false });
(async () => {
  const client = createClient({ socket: { path: socketPath } });
  await client.connect();
  // add(2, 2) | mul(4) | mul(10): the middle step has no id (derived), the last names its own
  const body = {
    v: 1, id: firstId, task: 'tests.apps.canvas.add', args: [2, 2], kwargs: {}, retries: 0,
    chain: [sig('tests.apps.canvas.mul', [4]),
            sig('tests.apps.canvas.mul', [10], { task_id: lastId })],
  };
  await client.sendCommand(['XADD', `${prefix}:q:{default}`, '*', 'm', Buffer.from(encode(body))]);
  // wait for the last step's record, as a Python AsyncResult.get does
  const key = `${prefix}:result:${lastId}`;
  const raw = await client.sendCommand(['BLMOVE', key, key, 'LEFT', 'RIGHT', '60'],
                                       { returnBuffers: true });
  const record = decode(raw);
  console.log(JSON.stringify({ state: record[0], value: record[1] }));
  await client.quit();
})().catch((err) => { console.error(err); process.exit(1); });
"""


@pytest.fixture(scope="session")
def node_modules(tmp_path_factory):
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed for the other-language producer test"
    where = tmp_path_factory.mktemp("node-producer")
    subprocess.run([npm, "install", "--prefix", str(where), "--no-audit", "--no-fund",
                    "--loglevel=error", "redis@^4", "@msgpack/msgpack@^3"],
                   check=True, capture_output=True, timeout=600)
    return where


def test_a_chain_built_by_a_node_producer(capp, run_worker, redis_server, node_modules):
    # Given a worker, and a Node.js producer writing the chain's first body with XADD
    run_worker("--pool", "threads", "-c", "2", app=APP)
    script = node_modules / "producer.js"
    script.write_text(PRODUCER)
    first, last = str(uuid.uuid4()), str(uuid.uuid4())
    out = subprocess.run(["node", str(script), str(redis_server.socket), capp.conf.key_prefix,
                          first, last], cwd=node_modules, capture_output=True, text=True,
                         timeout=120)
    # Then the chain ran to the end: Node read the last step's record itself
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '{"state":"SUCCESS","value":160}'
    # and the step without an id got the derived one (docs/wire.md)
    assert AsyncResult(child_id(first, "next"), capp).get(timeout=60) == 16
    assert AsyncResult(last, capp).get(timeout=60) == 160
