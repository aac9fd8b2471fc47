import assert from "node:assert/strict";
import { describeVariable, VARIABLE_NAMES } from "../lib/config/variables.ts";

const read = (path: string) => Deno.readTextFile(new URL(`../${path}`, import.meta.url));

Deno.test("docs: the README's configuration table matches lib/config/config.ts", async () => {
  const readme = await read("README.md");
  for (const name of VARIABLE_NAMES) {
    const variable = describeVariable(name);
    const row = readme.split("\n").find((line) => line.startsWith(`| \`${name}\``));
    assert.ok(row, `README.md has no row for ${name}`);
    const cell = row.split("|")[2].trim();
    assert.equal(cell, variable.default === undefined ? "—" : `\`${variable.default}\``, `default of ${name}`);
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

Deno.test("docs: the README shows the commands that exist", async () => {
  const readme = await read("README.md");
  const tasks = Object.keys(JSON.parse(await read("deno.json")).tasks);
  for (const [, task] of readme.matchAll(/deno task ([a-z-]+)/g)) {
    assert.ok(tasks.includes(task), `README mentions 'deno task ${task}', which deno.json lacks`);
  }
  assert.ok(readme.includes("deno task test"));
});
