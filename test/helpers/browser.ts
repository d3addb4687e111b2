// Headless Chromium (Debian's `chromium`, installed by scripts/test.sh) driven by puppeteer-core,
// and screenshots under test-output/ (gitignored) for a person to look at after a run.
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { ROOT } from "./server.js";

export const SCREENSHOTS = path.join(ROOT, "test-output", "dashboard");

function chromiumPath(): string {
  const given = process.env.OPENFT_TEST_CHROMIUM;
  if (given) return given;
  for (const name of ["chromium", "chromium-browser", "google-chrome"]) {
    try {
      return execFileSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" }).trim();
    } catch {
      // try the next name
    }
  }
  throw new Error("no Chromium found: scripts/test.sh installs Debian's chromium (or set OPENFT_TEST_CHROMIUM)");
}

export async function launchBrowser(): Promise<Browser> {
  // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
  return puppeteer.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  });
}

/** Fails the test on any request that leaves the server's origin (the page must load nothing else). */
export function watchOrigin(page: Page, origin: string, offOrigin: string[]): void {
  page.on("request", (r) => {
    const url = r.url();
    if (!url.startsWith(origin) && !url.startsWith("data:") && !url.startsWith("blob:")) offOrigin.push(url);
  });
}

export async function screenshot(page: Page, name: string): Promise<void> {
  await fs.mkdir(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) as `${string}.png`, fullPage: true });
}
