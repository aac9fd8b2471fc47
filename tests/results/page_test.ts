/**
 * The results page in a real browser (headless Chromium over the DevTools
 * protocol): loaded from the service under an embargo token, votes are
 * published, and the page's numbers reach the database's totals, live. With
 * `UPDATE_SCREENSHOT=1` (and write access to docs/) it saves the screenshot
 * docs/live-results.md shows, docs/results-page.png. In poll mode, and when its
 * stream is refused, the page follows the results by conditional requests to `/results`.
 */
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { CHROMIUM, launchBrowser, type Page } from "../support/browser.ts";
import { type ResultsService, resultsService } from "../support/results.ts";
import { results } from "../support/servers.ts";
import { openStream } from "../support/sse.ts";
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
    const { service } = setup;
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

    const shown = await untilPageShows(
      page,
      setup,
      buildMix({ valid: 4000, laws: 4, duplicates: 40, malformed: 10, seed: 11 }),
    );
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

/** A law as the page shows it: id, oui, non (its data attributes), the card's text and the bar's label. */
type Shown = [string, number, number, string, string];

/** Publishes `mix` and waits until `page` shows its totals; they then equal vote_results. Resolves with what it shows. */
async function untilPageShows(
  page: Page,
  setup: ResultsService,
  mix: ReturnType<typeof buildMix>,
): Promise<Shown[]> {
  for (let i = 0; i < mix.bodies.length; i += 500) await setup.queue.publish(mix.bodies.slice(i, i + 500));
  let shown: Shown[] = [];
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
    const table = JSON.stringify(await results(setup.db.sql));
    throw new Error(`${error.message}; the page shows ${JSON.stringify(onPage())}, vote_results ${table}`);
  });
  assert.deepEqual(onPage(), await results(setup.db.sql), "the page equals vote_results");
  return shown;
}

/** The statuses of the page's requests to /results so far, as the browser saw them. */
function pollStatuses(page: Page): Promise<number[]> {
  return page.evaluate<number[]>(`performance.getEntriesByType("resource")
    .filter((e) => new URL(e.name).pathname === "/results").map((e) => e.responseStatus)`);
}

const VIA = "document.getElementById('status').dataset.via + ' ' + document.getElementById('status').textContent";

Deno.test({
  name: "results page: with RESULTS_PAGE_MODE=poll it polls /results with conditional requests and shows the totals",
  ignore: CHROMIUM === undefined,
  fn: async () => {
    await using setup = await resultsService("h26_page", { RESULTS_PAGE_MODE: "poll" });
    await using browser = await launchBrowser();
    const page = await browser.open(`${setup.service.url}/`);
    await waitUntil(async () => (await page.evaluate<string>(VIA)) === "poll Live", "the page polls", 20_000, 50);
    await untilPageShows(page, setup, buildMix({ valid: 2000, laws: 3, duplicates: 20, seed: 12 }));
    // Once the totals stop changing, each poll is answered 304 (the page sent the tag it holds).
    await waitUntil(
      async () => (await pollStatuses(page)).slice(-2).join() === "304,304",
      "polls answered 304",
      10_000,
    );
    const statuses = await pollStatuses(page);
    assert.ok(statuses.every((s) => s === 200 || s === 304), statuses.join());
    assert.equal(await page.evaluate<number>("document.querySelectorAll('li.law').length"), 3);
    assert.deepEqual(page.errors, [], "no script error, no CSP violation");
    assert.equal(await setup.service.stop(), 0);
  },
});

Deno.test({
  name: "results page: when its stream is refused (RESULTS_MAX_CLIENTS reached, 503) the page polls instead",
  ignore: CHROMIUM === undefined,
  fn: async () => {
    await using setup = await resultsService("h26_page", { RESULTS_MAX_CLIENTS: "1" });
    await using holder = await openStream(`${setup.service.url}/results/stream`);
    assert.equal(holder.response.status, 200, "the one stream the cap allows");
    await using browser = await launchBrowser();
    const page = await browser.open(`${setup.service.url}/`);
    await waitUntil(async () => (await page.evaluate<string>(VIA)) === "poll Live", "the page polls", 20_000, 50);
    await untilPageShows(page, setup, buildMix({ valid: 1000, laws: 2, seed: 13 }));
    // The refused stream is the one error the console shows (Chromium logs the 503); nothing else.
    assert.deepEqual(page.errors.filter((e) => !/results\/stream|503/.test(e)), [], page.errors.join("\n"));
    assert.equal(await setup.service.stop(), 0);
  },
});
