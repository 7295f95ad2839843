// Bundles src/main.ts and src/styles.css into dist/ with content-hashed names, and writes
// dist/index.html naming them (the gateway serves it at / and the rest under /console/).
// The service worker (src/sw.ts) is bundled apart, as dist/sw.js under a fixed name: the
// browser finds it by its URL (/sw.js, so its scope is the whole console) and checks it
// for updates itself.
import { build } from "esbuild";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename } from "node:path";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist");
const result = await build({
  entryPoints: ["src/main.ts", "src/styles.css"],
  bundle: true,
  minify: true,
  sourcemap: false,
  format: "esm",
  target: "es2022",
  outdir: "dist",
  entryNames: "[name]-[hash]",
  metafile: true,
  logLevel: "warning",
});
const outputs = Object.keys(result.metafile.outputs).map((path) => basename(path));
const script = outputs.find((name) => name.endsWith(".js"));
const style = outputs.find((name) => name.endsWith(".css"));
const page = readFileSync("src/index.html", "utf8")
  .replace("%SCRIPT%", `/console/${script}`)
  .replace("%STYLE%", `/console/${style}`);
writeFileSync("dist/index.html", page);
// A classic script, not a module: every browser with Web Push runs those as workers.
await build({
  entryPoints: ["src/sw.ts"],
  bundle: true,
  minify: true,
  sourcemap: false,
  format: "iife",
  target: "es2022",
  outfile: "dist/sw.js",
  logLevel: "warning",
});
writeFileSync("dist/favicon.svg", readFileSync("src/favicon.svg"));
console.log(`built dist/index.html, ${script}, ${style}, sw.js`);
