// The pressure lab's pictures: progress over time, protected against unprotected, one panel (SVG file) per kernel
// and variant, drawn with vega-lite and vega from the results file (records with a series; old records have none).
// vega renders in Node without a browser: compile the vega-lite spec, then View.toSVG() with renderer 'none'.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';
import { outcomeOf } from './record.mjs';

const SIDE = { exec: 'protected', none: 'unprotected' };
const SECTOR_MIB = 512 / (1 << 20);

/** The vega-lite spec of one panel: every run a line of MiB written to /dev/nbd0 against seconds, its end marked. */
export function panelSpec(records, title) {
  const lines = [];
  const ends = [];
  // Unprotected first, so the protected lines are drawn on top of them.
  [...records].sort((a, b) => (a.protect === b.protect ? 0 : a.protect === 'none' ? -1 : 1)).forEach((r, i) => {
    const run = `${r.protect}-${i}`;
    const { t, nbd0WriteSectors } = r.series;
    const outcome = outcomeOf(r).outcome;
    lines.push({ run, side: SIDE[r.protect], t: 0, mib: 0 });
    for (let k = 0; k < t.length; k++) lines.push({ run, side: SIDE[r.protect], t: t[k], mib: nbd0WriteSectors[k] * SECTOR_MIB });
    if (t.length) ends.push({ run, side: SIDE[r.protect], t: t.at(-1), mib: nbd0WriteSectors.at(-1) * SECTOR_MIB, outcome });
  });
  const n = (p) => records.filter((r) => r.protect === p).length;
  const color = { field: 'side', type: 'nominal', title: null, scale: { domain: [SIDE.exec, SIDE.none], range: ['#1f77b4', '#d62728'] } };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, subtitle: `${n('exec')} protected and ${n('none')} unprotected runs; a flat line is a stall` },
    width: 560,
    height: 260,
    background: 'white',
    layer: [
      {
        data: { values: lines },
        mark: { type: 'line', strokeWidth: 1.2, opacity: 0.7 },
        encoding: {
          // symlog: the few seconds of a run without a stall and the 300 s of a hang both get room.
          x: { field: 't', type: 'quantitative', scale: { type: 'symlog', constant: 1 }, axis: { values: [0, 1, 2, 5, 10, 20, 50, 100, 200, 300, 500] }, title: 'seconds since the load was released (the writer; in variant swap, the hog); symlog scale' },
          y: { field: 'mib', type: 'quantitative', title: 'MiB written to /dev/nbd0 (completed)' },
          color,
          detail: { field: 'run' },
        },
      },
      {
        data: { values: ends },
        mark: { type: 'point', filled: true, size: 60 },
        encoding: {
          x: { field: 't', type: 'quantitative', scale: { type: 'symlog', constant: 1 } },
          y: { field: 'mib', type: 'quantitative' },
          color,
          shape: {
            field: 'outcome',
            type: 'nominal',
            title: 'end of run',
            scale: { domain: ['no-stall', 'stalled', 'hung', 'unresolved', 'incomplete', 'failed'], range: ['circle', 'triangle-up', 'cross', 'diamond', 'square', 'triangle-down'] },
          },
        },
      },
    ],
  };
}

export async function renderSvg(spec) {
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

/** One SVG per kernel and variant with runs that have a series, in outDir; returns the paths written. */
export async function writePlots(records, outDir) {
  const panels = new Map();
  for (const r of records) {
    if (!r.series || !r.series.t.length || !SIDE[r.protect]) continue;
    const key = `${r.kernelName}-${r.variant}`;
    if (!panels.has(key)) panels.set(key, []);
    panels.get(key).push(r);
  }
  fs.mkdirSync(outDir, { recursive: true });
  const written = [];
  for (const [key, rs] of [...panels].sort()) {
    const kernel = (rs[0].kernel ?? rs[0].kernelName).replace(/-amd64$/, '');
    const file = path.join(outDir, `${key}.svg`);
    fs.writeFileSync(file, await renderSvg(panelSpec(rs, `Linux ${kernel} (${rs[0].kernelName}), variant ${rs[0].variant}`)));
    written.push(file);
  }
  return written;
}
