// A React app using the TokenDashboard wrapper as a Next.js page would, for the browser
// tests (built by them with esbuild; not served, never shipped). window.harnessConfig says where to
// read; window.harness.spend(feature) deducts with the app's own client and hands the
// result to the dashboard as `lastSpend`.
import { createClient } from "@supabase/supabase-js";
import { useState } from "react";
import { createRoot } from "react-dom/client";
import TokenDashboard from "../src/react";
import type { Deduction } from "../src/types";

interface HarnessConfig {
  supabaseUrl: string;
  anonKey: string;
  organizationId: string;
  plan?: string;
}

declare global {
  interface Window {
    harnessConfig: HarnessConfig;
    harness: { spend(feature: string): Promise<Deduction> };
  }
}

const config = window.harnessConfig;
const supabase = createClient(config.supabaseUrl, config.anonKey);

function App() {
  const [lastSpend, setLastSpend] = useState<Deduction | null>(null);
  const [state, setState] = useState("");
  const [upgrades, setUpgrades] = useState(0);
  window.harness = {
    async spend(feature: string) {
      const { data, error } = await supabase.rpc("deduct_tokens", { feature });
      if (error) throw new Error(error.message);
      setLastSpend(data as Deduction);
      return data as Deduction;
    },
  };
  return (
    <main>
      <p id="react-state">{state}</p>
      <p id="react-upgrades">{upgrades}</p>
      <TokenDashboard
        client={supabase}
        organizationId={config.organizationId}
        plan={config.plan ?? null}
        lastSpend={lastSpend}
        onStateChange={(next) => setState(next)}
        onUpgrade={() => setUpgrades((n) => n + 1)}
        className="in-react"
      />
    </main>
  );
}

createRoot(document.getElementById("root") as HTMLElement).render(<App />);
