// The web page end to end in headless Chromium: upload a PNG, see the
// progress and the heatmap build up while it computes, then the answer,
// move the path slider, save a screenshot.
//   node page_test.js URL IMAGE.png ARTIFACT_DIR
// Prints what the page showed as JSON (test_web.py checks it against the
// API); exits non-zero on any failure or page error.
"use strict";
const assert = require("assert");
const path = require("path");
const { chromium } = require("playwright-core");

const [url, image, artifacts] = process.argv.slice(2);

// Pixels of a canvas whose red and blue differ: the attribution's colours.
function colouredPixels(id) {
  const canvas = document.getElementById(id);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) if (Math.abs(data[i] - data[i + 2]) > 40) n++;
  return n;
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
  });
  const errors = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 950 } });
    page.on("pageerror", e => errors.push(String(e)));
    await page.goto(url + "/");
    await page.waitForFunction(() => document.getElementById("target").options.length > 1, null, { timeout: 30000 });
    await page.setInputFiles("#file", image);
    await page.selectOption("#target", "cat");
    await page.fill("#steps", "64");
    // What the page shows while it computes: each status with the heatmap's coloured pixels then.
    await page.evaluate(colouredPixelsSource => {
      const coloured = new Function(`return (${colouredPixelsSource})`)();
      window.seen = [];
      new MutationObserver(() => window.seen.push({
        status: document.getElementById("status").textContent,
        bar: document.getElementById("progress").value,
        heatmap: coloured("heatmap"),
      })).observe(document.getElementById("status"), { childList: true, characterData: true, subtree: true });
    }, colouredPixels.toString());
    await page.click("#explain");
    await page.waitForFunction(() => document.getElementById("delta").textContent !== "" ||
                                     document.getElementById("error").textContent !== "", null, { timeout: 120000 });
    assert.strictEqual(await page.textContent("#error"), "");
    const seen = await page.evaluate(() => window.seen);
    const partway = seen.filter(s => /^Computing: \d+ of 64 path points/.test(s.status));
    assert.ok(partway.length > 0, "no progress shown: " + JSON.stringify(seen));
    assert.ok(partway.some(s => s.bar > 0 && s.bar < 1), "the bar never stood part way: " + JSON.stringify(seen));
    assert.ok(partway.every(s => s.heatmap > 0), "the heatmap did not build up: " + JSON.stringify(seen));
    assert.ok(await page.$eval("#progress", bar => bar.hidden), "the bar stayed after the answer");
    const heatmap = await page.evaluate(colouredPixels, "heatmap");
    assert.ok(heatmap > 0, "the heatmap shows no attribution");
    const probabilities = await page.$$eval("#probabilities > div", rows => rows.length);
    const last = await page.textContent("#step-label");
    const partialAtEnd = await page.$eval("#partial", c => c.toDataURL());
    await page.$eval("#step", slider => { slider.value = "0"; slider.dispatchEvent(new Event("input")); });
    const first = await page.textContent("#step-label");
    const partialAtStart = await page.$eval("#partial", c => c.toDataURL());
    assert.ok(first.startsWith("step 1 of 64"), first);
    assert.notStrictEqual(first, last);
    assert.notStrictEqual(partialAtStart, partialAtEnd, "the IG so far did not change with the slider");
    // Captum's look: the page's heatmap is the API's PNG for the same request, pixel by pixel.
    await page.selectOption("#look", "all");
    await page.fill("#outliers", "2");
    const captum = await page.evaluate(async () => {
      const query = "format=png&sign=all&outlier_perc=2&target=cat&n_steps=64";
      const answer = await fetch("/v1/attributions?" + query, { method: "POST", body: document.getElementById("file").files[0],
                                                                headers: { "Content-Type": "image/png" } });
      const png = await createImageBitmap(await answer.blob());
      const drawn = document.createElement("canvas");
      drawn.width = png.width;
      drawn.height = png.height;
      drawn.getContext("2d").drawImage(png, 0, 0);
      const api = drawn.getContext("2d").getImageData(0, 0, png.width, png.height);
      const heatmap = document.getElementById("heatmap");
      const side = heatmap.width, zoom = Math.max(1, Math.floor(256 / side)), margin = 4;
      const shown = heatmap.getContext("2d").getImageData(0, 0, side, side).data;
      let worst = 0, off = 0;
      for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) {
        const a = ((margin + y * zoom + 1) * api.width + margin + x * zoom + 1) * 4, b = (y * side + x) * 4;
        const d = Math.max(...[0, 1, 2].map(c => Math.abs(api.data[a + c] - shown[b + c])));
        worst = Math.max(worst, d);
        if (d > 1) off++;
      }
      return { worst, off, pixels: side * side, legend: document.getElementById("legend-low").textContent };
    });
    assert.ok(captum.worst <= 3 && captum.off <= captum.pixels / 100, JSON.stringify(captum));
    assert.ok(captum.legend.startsWith("-"), "the legend of sign all runs from minus the scale");
    await page.screenshot({ path: path.join(artifacts, "web-page.png"), fullPage: true });
    assert.deepStrictEqual(errors, []);
    console.log(JSON.stringify({
      summary: await page.textContent("#summary"),
      delta: await page.textContent("#delta"),
      probabilities,
      heatmap,
      first,
      last,
      progress: partway.length,
      captum,
    }));
  } finally {
    await browser.close();
  }
})().catch(e => {
  console.error(e);
  process.exit(1);
});
