// Opens each job's HTML report in headless Chromium and fails on what a reader would see as broken:
// a console error or page error, a request that leaves the file (the report must be self-contained),
// a missing or undecodable chart (<img class="chart"> with naturalWidth 0), no chart at all, or a table without rows.
// Saves a full-page screenshot of each report.
//
//   node check-reports.mjs SCREENSHOT_DIR REPORT.html...
import { chromium } from 'playwright-core';
import { existsSync, mkdirSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [shotDir, ...reports] = process.argv.slice(2);
if (!shotDir || reports.length === 0) {
  console.error('usage: node check-reports.mjs SCREENSHOT_DIR REPORT.html...');
  process.exit(2);
}
mkdirSync(shotDir, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
let failures = 0;
try {
  for (const report of reports) {
    if (!existsSync(report)) {
      failures++;
      console.log(`FAIL ${report}: not written (see the job's log: "report not written")`);
      continue;
    }
    const problems = [];
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    const url = pathToFileURL(resolve(report)).href;
    // Self-contained: anything but the file itself and its data: URIs is a network fetch at view time.
    await page.route('**/*', (route) => {
      const u = route.request().url();
      if (u === url || u.startsWith('data:')) return route.continue();
      problems.push(`fetches ${u}`);
      return route.abort();
    });
    await page.goto(url, { waitUntil: 'load' });
    const facts = await page.evaluate(() => ({
      title: document.title,
      charts: [...document.querySelectorAll('img.chart')].map((img) => ({
        alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight })),
      tables: [...document.querySelectorAll('table')].map((t) => ({
        header: [...t.querySelectorAll('thead th')].map((th) => th.textContent).join(' | '),
        rows: t.querySelectorAll('tbody tr').length })),
    }));
    if (facts.charts.length === 0) problems.push('no chart (<img class="chart">) in the report');
    facts.charts.filter((c) => !c.complete || c.width === 0 || c.height === 0)
      .forEach((c) => problems.push(`chart "${c.alt}" did not render (naturalWidth ${c.width})`));
    if (facts.tables.length === 0) problems.push('no table in the report');
    facts.tables.filter((t) => t.rows === 0).forEach((t) => problems.push(`empty table (${t.header})`));

    const shot = resolve(shotDir, basename(report).replace(/\.html$/, '') + '.png');
    await page.screenshot({ path: shot, fullPage: true });
    await page.close();
    const what = `${facts.charts.length} chart(s), ${facts.tables.length} table(s) `
      + `(${facts.tables.map((t) => t.rows).join('+')} rows); screenshot ${shot}`;
    if (problems.length) {
      failures++;
      console.log(`FAIL ${report}: ${what}`);
      problems.forEach((p) => console.log(`  - ${p}`));
    } else {
      console.log(`ok   ${report}: ${what}`);
    }
  }
} finally {
  await browser.close();
}
process.exit(failures ? 1 : 0);
