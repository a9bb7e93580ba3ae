// Opens a garden report in headless Chromium and prints what it found as
// JSON: console errors, requests that left the file, each chart's series
// count and painted pixels, and what a click on a lineage node showed.
// Usage: node check-report.mjs REPORT.html SCREENSHOT.png
// The Rust test (tests/tests/all/report.rs) judges the result.
import { chromium } from 'playwright-core';
import { resolve } from 'node:path';
import { existsSync } from 'node:fs';

const [file, shot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!existsSync(executablePath)) {
  console.error(`no Chromium at ${executablePath}: apt-get install chromium (or set CHROMIUM)`);
  process.exit(2);
}
const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const errors = [];
  const requests = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('request', (r) => {
    if (!r.url().startsWith('file:') && !r.url().startsWith('data:')) requests.push(r.url());
  });
  await page.goto('file://' + resolve(file), { waitUntil: 'load' });
  await page.waitForFunction(() => window.garden !== undefined, null, { timeout: 20000 });

  const charts = await page.evaluate(() => {
    const out = {};
    for (const [id, chart] of Object.entries(window.garden.charts)) {
      const canvas = chart.getDom().querySelector('canvas');
      let painted = 0;
      if (canvas) {
        const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        for (let i = 3; i < px.length; i += 4) if (px[i] > 0) painted++;
      }
      out[id] = {
        series: chart.getOption().series.length,
        expected: window.garden.expected[id],
        painted,
        pixels: canvas ? canvas.width * canvas.height : 0,
      };
    }
    return out;
  });

  // A real click on the first parent of the best variant in the tree.
  let clicked = null;
  if (await page.evaluate(() => Boolean(window.garden.charts.lineage))) {
    await page.locator('#lineage').scrollIntoViewIfNeeded();
    const target = await page.evaluate(() => {
      const chart = window.garden.charts.lineage;
      const data = chart.getModel().getSeriesByIndex(0).getData();
      const root = window.garden.data.lineage.tree.name;
      const box = chart.getDom().getBoundingClientRect();
      // A tree's layout is relative to the series' own box.
      const series = chart.getOption().series[0];
      for (let i = 0; i < data.count(); i++) {
        const name = data.getName(i);
        const layout = data.getItemLayout(i);
        if (name && name !== root && layout) {
          return { name, x: box.left + series.left + layout.x, y: box.top + series.top + layout.y };
        }
      }
      return null;
    });
    if (target) {
      await page.mouse.click(target.x, target.y);
      clicked = await page.evaluate(() => ({
        title: document.getElementById('node-title').textContent,
        genes: Array.from(document.querySelectorAll('#genes tbody tr')).map((tr) =>
          Array.from(tr.children).map((td) => td.textContent)),
      }));
      clicked.name = target.name;
    }
  }
  await page.evaluate(() => window.scrollTo(0, 0));
  if (shot) await page.screenshot({ path: shot });
  console.log(JSON.stringify({ errors, requests, charts, clicked }));
} finally {
  await browser.close();
}
