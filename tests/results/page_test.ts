/**
 * The results page in a real browser (headless Chromium over the DevTools
 * protocol): loaded from the service under an embargo token, votes are
 * published, and the page's numbers reach the database's totals, live. With
 * `UPDATE_SCREENSHOT=1` (and write access to docs/) it saves the screenshot
 * docs/live-results.md shows, docs/results-page.png.
 */
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { CHROMIUM, launchBrowser } from "../support/browser.ts";
import { resultsService } from "../support/results.ts";
import { results } from "../support/servers.ts";
import { buildMix } from "../support/votes.ts";
import { waitUntil } from "../support/wait.ts";

const SCREENSHOT = new URL("../../docs/results-page.png", import.meta.url);

/** What the page shows, per law: [oui, non] from its data attributes, and the card's text. */
const SHOWN = `JSON.stringify([...document.querySelectorAll("li.law")].map((li) =>
  [li.dataset.law, Number(li.dataset.oui), Number(li.dataset.non), li.innerText,
   li.querySelector(".bar").getAttribute("aria-label")]))`;

Deno.test({
  name: "results page: in headless Chromium, the numbers reach the database's totals as votes are counted",
  ignore: CHROMIUM === undefined,
  fn: async () => {
    const token = "page-test-results-token-0123456789";
    await using setup = await resultsService("h14_page", { RESULTS_TOKEN: token });
    const { db, queue, service } = setup;
    await using browser = await launchBrowser();
    const page = await browser.open(`${service.url}/?token=${token}`);
    await waitUntil(
      async () => (await page.evaluate<string>("document.getElementById('status').textContent")) === "Live",
      "the page's stream is open",
      20_000,
      50,
    );
    assert.equal(await page.evaluate<string>("location.search"), "", "the token is taken out of the address bar");
    assert.equal(await page.evaluate<string>("document.documentElement.lang"), "en");
    assert.equal(await page.evaluate<string>("document.getElementById('status').getAttribute('role')"), "status");

    const mix = buildMix({ valid: 4000, laws: 4, duplicates: 40, malformed: 10, seed: 11 });
    for (let i = 0; i < mix.bodies.length; i += 500) await queue.publish(mix.bodies.slice(i, i + 500));
    let shown: [string, number, number, string, string][] = [];
    const onPage = () => Object.fromEntries(shown.map(([law, oui, non]) => [law, [oui, non]]));
    await waitUntil(
      async () => {
        shown = JSON.parse(await page.evaluate<string>(SHOWN));
        return isDeepStrictEqual(onPage(), mix.expected);
      },
      "the page shows the published votes' totals",
      60_000,
      100,
    ).catch(async (error) => {
      const table = JSON.stringify(await results(db.sql));
      throw new Error(`${error.message}; the page shows ${JSON.stringify(onPage())}, vote_results ${table}`);
    });
    assert.deepEqual(onPage(), await results(db.sql), "the page equals vote_results");
    for (const [law, oui, non, text, label] of shown) {
      const share = (n: number) => (n / (oui + non) * 100).toFixed(1);
      assert.match(text, new RegExp(`^${law}\\n`), "the law's name is text");
      assert.ok(
        text.includes(`(${share(oui)} %)`) && text.includes(`(${share(non)} %)`),
        `percentages in text: ${text}`,
      );
      assert.ok(text.includes(oui.toLocaleString("en-US")), `the oui count in text: ${text}`);
      assert.equal(label, `Oui ${share(oui)} %, Non ${share(non)} %`, "the bar says what it shows");
    }
    const width = await page.evaluate<number>("document.documentElement.scrollWidth");
    assert.ok(width <= 412, `no sideways scrolling on a phone (${width} px wide)`);
    assert.deepEqual(page.errors, [], "no script error, no CSP violation");

    if (Deno.env.get("UPDATE_SCREENSHOT") === "1") {
      await Deno.writeFile(SCREENSHOT, await page.screenshot());
      console.log(`    wrote ${SCREENSHOT.pathname}`);
    }
    assert.equal(await service.stop(), 0);
  },
});
