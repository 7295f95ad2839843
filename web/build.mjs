// Bundles src/main.ts and src/styles.css into dist/ with content-hashed names, and writes
// dist/index.html naming them (the gateway serves it at / and the rest under /console/).
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
writeFileSync("dist/favicon.svg", readFileSync("src/favicon.svg"));
console.log(`built dist/index.html, ${script}, ${style}`);
