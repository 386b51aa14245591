// Local stand-in for the Supabase Edge Runtime's main service.
//
// Every `supabase/functions/<name>/index.ts` is imported once; the handler it hands to
// `Deno.serve` is captured instead of binding a port, and one server dispatches
// `/<name>/...` to it. The gateway strips `/functions/v1`, exactly as Supabase does, so
// a function sees the same `req.url` path (`/<name>/...`) locally and when deployed.

type Handler = (request: Request, info: Deno.ServeHandlerInfo) => Response | Promise<Response>;

const functionsDir = Deno.env.get("FUNCTIONS_DIR") ?? "supabase/functions";
const port = Number(Deno.env.get("FUNCTIONS_PORT") ?? "54332");
const handlers = new Map<string, Handler>();
const realServe = Deno.serve;

function capture(name: string): void {
  // deno-lint-ignore no-explicit-any
  (Deno as any).serve = (...args: any[]) => {
    const handler = args.find((a) => typeof a === "function") ??
      args.find((a) => a && typeof a.handler === "function")?.handler;
    if (!handler) throw new Error(`${name}: Deno.serve called without a handler`);
    handlers.set(name, handler);
    return {
      finished: Promise.resolve(),
      shutdown: () => Promise.resolve(),
      ref() {},
      unref() {},
      addr: { transport: "tcp", hostname: "127.0.0.1", port },
    };
  };
}

for await (const entry of Deno.readDir(functionsDir)) {
  if (!entry.isDirectory || entry.name.startsWith("_") || entry.name.startsWith(".")) continue;
  const path = `${Deno.realPathSync(functionsDir)}/${entry.name}/index.ts`;
  try {
    Deno.statSync(path);
  } catch {
    continue;
  }
  capture(entry.name);
  const module = await import(new URL(`file://${path}`).href);
  if (!handlers.has(entry.name) && typeof module.default?.fetch === "function") {
    handlers.set(entry.name, module.default.fetch);
  }
}
// deno-lint-ignore no-explicit-any
(Deno as any).serve = realServe;

realServe({ hostname: "127.0.0.1", port, onListen: () => {} }, (request, info) => {
  const name = new URL(request.url).pathname.split("/")[1] ?? "";
  if (name === "_health") return new Response("ok");
  const handler = handlers.get(name);
  if (!handler) {
    return Response.json({ error: `Function not found: ${name}`, reason: "function_not_found" }, {
      status: 404,
    });
  }
  return handler(request, info);
});
console.log(`functions: serving ${[...handlers.keys()].join(", ")} on ${port}`);
