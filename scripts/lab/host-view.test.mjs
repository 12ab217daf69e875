// The host's procedure (scripts/lab/host-view.mjs) against a fake QEMU monitor on a Unix socket, with its times
// shortened: it must take no dump while the observer talks, take two once it is silent during a stall, end the VM,
// and leave a run alone when the observer comes back. `node --test scripts/lab/`.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { watchHost } from './host-view.mjs';

/** A fake HMP: answers info blockstats from `disk()`, records sendkey and quit, prints the dump text on sysrq t. */
function fakeMonitor(socketPath, { disk, onKey, onQuit, mute = false }) {
  const commands = [];
  const server = net.createServer((c) => {
    c.write('QEMU 7.2.22 monitor - type \'help\' for more information\r\n(qemu) ');
    if (mute) return; // accepts the connection, never answers
    let buf = '';
    c.on('data', (d) => {
      buf += d;
      for (let i; (i = buf.indexOf('\n')) >= 0; ) {
        const cmd = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        commands.push(cmd);
        // QEMU's readline echoes the command, with escape sequences.
        let answer = `${cmd}\r\n\x1b[K`;
        if (cmd === 'info blockstats') answer += `virtio0: rd_bytes=0 wr_bytes=${disk()} rd_operations=0 wr_operations=0\r\n`;
        if (cmd.startsWith('sendkey ')) onKey(cmd.slice('sendkey alt-sysrq-'.length));
        if (cmd === 'quit') {
          onQuit();
          c.end();
          return;
        }
        c.write(`${answer}(qemu) `);
      }
    });
  });
  server.listen(socketPath);
  return { commands, close: () => server.close() };
}

const timing = { silentSeconds: 2, intervalSeconds: 2, hangSeconds: 3, latestSeconds: 20, quietMs: 200 };

async function scenario({ observerBack = false, stall = true, kernelNoise = false, mute = false }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'host-view-'));
  const socketPath = path.join(dir, 'mon.sock');
  let out = 'lab: pids: server=200 writer=300 hog=400\n';
  let lastOutputAt = Date.now();
  const print = (text) => {
    out += text;
    lastOutputAt = Date.now();
  };
  let writes = 0;
  let endVm;
  const done = new Promise((resolve) => (endVm = resolve));
  let mKeys = 0;
  const mon = fakeMonitor(socketPath, {
    mute,
    disk: () => writes,
    onKey: (key) => {
      if (key === 't') print('[ 1.0] task:node            state:D stack:0 pid:200 tgid:200 ppid:1 flags:0x0\n[ 1.0]  <TASK>\n[ 1.0]  schedule+0x1/0x2\n[ 1.0]  </TASK>\n');
      if (key === 'm') mKeys++;
      // The observer prints again after dump 1, or only during dump 2 (its record begins).
      if ((observerBack === 'after-dump-1' && mKeys === 1) || (observerBack === 'during-dump-2' && mKeys === 2)) {
        if (observerBack === 'after-dump-1') setTimeout(() => print('lab: t=180s: nbd0 written 9 MiB\n'), 300);
        else setTimeout(() => print('lab-record-begin\n'), 50); // while the dump is still being taken
      }
    },
    // QEMU and kernel-run take a moment to exit after quit, longer than the host's tick: nothing may be sent meanwhile.
    onQuit: () => setTimeout(endVm, 1500),
  });
  // Kernel messages (NBD_LAB_PRINTK=7: hung-task reports) keep coming: they are not the observer talking.
  const noise = kernelNoise ? setInterval(() => print('[ 99.0] INFO: task node:291 blocked for more than 20 seconds.\n'), 700) : undefined;
  // The observer: a stall reported after 1 s, then silence (disk writes stop at the same time).
  const ticker = setInterval(() => (writes += 4096), 100);
  setTimeout(() => {
    clearInterval(ticker);
    if (stall) print('lab: no progress for 10s at t=15s: recording the tasks (stall 1)\n');
  }, 1000);
  const talk = stall ? undefined : setInterval(() => print('lab: t=60s: still writing\n'), 500);
  // A run the host leaves alone ends by itself.
  const selfEnd = setTimeout(endVm, observerBack === 'after-dump-1' || !stall || mute ? 14000 : 30000);
  const view = await watchHost({ monitorPath: socketPath, output: () => out, lastOutputAt: () => lastOutputAt, done, timing });
  clearTimeout(selfEnd);
  clearInterval(talk);
  clearInterval(noise);
  mon.close();
  fs.rmSync(dir, { recursive: true, force: true });
  return { view, commands: mon.commands };
}

// Each scenario has its own socket and clocks, and mostly waits: they run side by side (85 s one after another).
describe('the host view', { concurrency: true }, () => {
  test('silent during a stall: two dumps (console level, tasks, CPUs, memory), the second after the disk stopped, then quit and nothing after it; kernel messages are not the observer', async () => {
    const { view, commands } = await scenario({ kernelNoise: true });
    assert.deepEqual(view.dumps.map((d) => d.name), ['dump-1', 'dump-2']);
    assert.match(view.dumps[0].text, /task:node/);
    const keys = commands.filter((c) => c.startsWith('sendkey')).map((c) => c.slice(-1));
    assert.deepEqual(keys, ['7', 't', 'l', 'm', '7', 't', 'l', 'm']);
    assert.equal(commands.at(-1), 'quit');
    assert.ok(view.dumps[1].t - view.dumps[0].t >= timing.intervalSeconds);
    assert.ok(view.series.t.length >= 5 && view.series.diskWriteBytes.at(-1) > 0);
    assert.ok(view.endedByHost);
  });

  test('an observer that keeps talking gets no dump, and the VM is not ended', async () => {
    const { view, commands } = await scenario({ stall: false });
    assert.equal(view.dumps.length, 0);
    assert.ok(!commands.includes('quit'));
    assert.ok(!commands.some((c) => c.startsWith('sendkey')));
  });

  test('an observer that prints again after the first dump reports the run itself: no second dump, no quit', async () => {
    const { view, commands } = await scenario({ observerBack: 'after-dump-1' });
    assert.deepEqual(view.dumps.map((d) => d.name), ['dump-1']);
    assert.ok(view.observerBack);
    assert.ok(!commands.includes('quit'));
  });

  test('an observer that begins its record during the second dump: the VM is not ended', async () => {
    const { view, commands } = await scenario({ observerBack: 'during-dump-2' });
    assert.deepEqual(view.dumps.map((d) => d.name), ['dump-1', 'dump-2']);
    assert.ok(view.observerBack);
    assert.ok(!commands.includes('quit'));
  });

  test('a monitor that never answers: the watch ends with the run, with no sample', async () => {
    const started = Date.now();
    const { view } = await scenario({ mute: true });
    assert.equal(view.series.t.length, 0);
    assert.ok(Date.now() - started < 30000);
  });
});
