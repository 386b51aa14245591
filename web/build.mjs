// Builds web/dist from web/src with esbuild (pinned in package.json):
//   token-dashboard.js  one file for a <script> tag: supabase-js included, registers <token-dashboard>
//   react.mjs           ES module for React / Next.js apps: react and @supabase/supabase-js
//                       stay imports of the app's own copies
//   react.d.mts, types/ its TypeScript declarations (tsc, pinned too)
// `node web/build.mjs [--outdir DIR]`; the same sources always give the same bytes (a test
// rebuilds into a temporary folder and compares with the committed web/dist).
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const flag = process.argv.indexOf("--outdir");
const outdir = flag > 0 ? resolve(process.argv[flag + 1] ?? "") : join(here, "dist");

const common = {
  bundle: true,
  target: ["es2022"],
  legalComments: "eof",
  charset: "utf8",
  logLevel: "warning",
  absWorkingDir: here,
};

await build({
  ...common,
  entryPoints: [join(here, "src/index.ts")],
  outfile: join(outdir, "token-dashboard.js"),
  format: "iife",
  globalName: "TokenDashboard",
  minify: true,
  platform: "browser",
});

await build({
  ...common,
  entryPoints: [join(here, "src/react.tsx")],
  outfile: join(outdir, "react.mjs"),
  format: "esm",
  jsx: "automatic",
  platform: "neutral",
  external: ["react", "react/jsx-runtime", "@supabase/supabase-js"],
});

rmSync(join(outdir, "types"), { recursive: true, force: true });
execFileSync(
  process.execPath,
  [
    join(here, "..", "node_modules", "typescript", "bin", "tsc"),
    "-p",
    join(here, "tsconfig.types.json"),
    "--outDir",
    join(outdir, "types"),
  ],
  { stdio: "inherit" },
);
writeFileSync(
  join(outdir, "react.d.mts"),
  'export * from "./types/react.js";\nexport { default } from "./types/react.js";\n',
);
