import assert from "node:assert/strict";
import { describeVariable, VARIABLE_NAMES, type VariableName } from "../lib/config/variables.ts";
import { anchorsOf, docFiles, linksOf } from "./support/markdown.ts";

const ROOT = new URL("../", import.meta.url);
const read = (path: string) => Deno.readTextFile(new URL(path, ROOT));

Deno.test("docs: docs/configuration.md's table matches lib/config/variables.ts", async () => {
  const page = await read("docs/configuration.md");
  for (const name of VARIABLE_NAMES) {
    const variable = describeVariable(name);
    const row = page.split("\n").find((line) => line.startsWith(`| \`${name}\``));
    assert.ok(row, `docs/configuration.md has no row for ${name}`);
    const cell = row.split("|")[2].trim();
    assert.equal(cell, variable.default === undefined ? "—" : `\`${variable.default}\``, `default of ${name}`);
  }
});

Deno.test("docs: the README's variables are a part of the configuration table, with the same defaults", async () => {
  const readme = (await read("README.md")).split("\n");
  const rows = readme.filter((line) => /^\| `[A-Z_]+` /.test(line));
  assert.ok(rows.length >= 5, "the README shows the most used variables");
  for (const row of rows) {
    const name = row.split("`")[1] as VariableName;
    assert.ok(VARIABLE_NAMES.includes(name), `README.md shows ${name}, which lib/config/variables.ts lacks`);
    const variable = describeVariable(name);
    assert.equal(row.split("|")[2].trim(), variable.default === undefined ? "—" : `\`${variable.default}\``, name);
  }
});

Deno.test("docs: .env.example lists every variable with its default", async () => {
  const example = await read(".env.example");
  for (const name of VARIABLE_NAMES) {
    const variable = describeVariable(name);
    const expected = variable.default === undefined ? `# ${name}=` : `${name}=${variable.default}`;
    assert.ok(example.split("\n").includes(expected), `.env.example lacks "${expected}"`);
  }
});

Deno.test("docs: the README and docs/ show only commands that exist", async () => {
  const tasks = Object.keys(JSON.parse(await read("deno.json")).tasks);
  for (const file of await docFiles()) {
    const text = await read(file);
    for (const [, task] of text.matchAll(/deno task ([a-z-]+)/g)) {
      assert.ok(tasks.includes(task), `${file} mentions 'deno task ${task}', which deno.json lacks`);
    }
  }
  const readme = await read("README.md");
  for (const command of ["deno task dev", "deno task test"]) {
    assert.ok(readme.split("\n").slice(0, 20).some((line) => line.includes(command)), `${command} in the first screen`);
  }
});

Deno.test("docs: the README stays short and links every page of docs/", async () => {
  const readme = await read("README.md");
  assert.ok(readme.split("\n").length <= 300, `README.md has ${readme.split("\n").length} lines`);
  for (const file of await docFiles()) {
    if (file.startsWith("docs/")) assert.ok(readme.includes(`(${file})`), `README.md does not link ${file}`);
  }
});

Deno.test("docs: every relative link and #anchor in README.md and docs/ resolves", async () => {
  const broken: string[] = [];
  let checked = 0;
  for (const file of await docFiles()) {
    for (const link of linksOf(await read(file))) {
      const [path, anchor] = link.split("#", 2);
      const target = path === "" ? new URL(file, ROOT) : new URL(path, new URL(file, ROOT));
      checked++;
      let text: string;
      try {
        const info = await Deno.stat(target);
        if (info.isDirectory || anchor === undefined) continue;
        text = await Deno.readTextFile(target);
      } catch {
        broken.push(`${file}: ${link} (no such file)`);
        continue;
      }
      if (!anchorsOf(text).has(anchor)) broken.push(`${file}: ${link} (no such heading)`);
    }
  }
  assert.ok(checked >= 20, `only ${checked} links found`);
  assert.deepEqual(broken, []);
});

Deno.test("docs: the link checker sees broken links and GitHub's anchors", () => {
  assert.deepEqual(linksOf("[a](docs/x.md#y) `[b](c.md)` [c](https://e.org)\n```\n[d](e.md)\n```\n![i](p.png)"), [
    "docs/x.md#y",
    "p.png",
  ]);
  assert.deepEqual(
    [...anchorsOf(
      "# A title\n## What it guarantees, and how\n## `POSTGRES_HOST` (several)\n## A title\n```\n# no\n```",
    )],
    ["a-title", "what-it-guarantees-and-how", "postgres_host-several", "a-title-1"],
  );
});
