// Lint, with the import boundaries of STYLE.md enforced as rules rather than goodwill.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

const restrict = (patterns) => ["error", { patterns }];
const noFastify = { group: ["fastify", "@fastify/*"], message: "services and the engine never import fastify" };
const noDrizzle = { group: ["drizzle-orm", "drizzle-orm/*", "pg", "@electric-sql/*"], message: "only src/storage and src/jobs touch the database" };
const noOnnx = { group: ["onnxruntime-node"], message: "the API never imports onnxruntime-node" };
// The serving seam: the API reaches the engine only through src/engine/serving/index.ts.
const onlyServingSeam = { regex: "(^|/)engine/(?!serving/index\\.js$)", message: "the API imports the engine only through src/engine/serving/index.js" };

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", ".venv/**", ".venv-vllm/**", "data/**", "models/**", ".cache/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: "readonly", console: "readonly", Buffer: "readonly", URL: "readonly", setTimeout: "readonly", clearTimeout: "readonly", setInterval: "readonly", clearInterval: "readonly", fetch: "readonly" } },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
      "@typescript-eslint/no-non-null-assertion": "off",
    },
  },
  {
    // Only src/config.ts reads the environment.
    files: ["src/**/*.ts"],
    ignores: ["src/config.ts"],
    rules: {
      "no-restricted-properties": ["error", { object: "process", property: "env", message: "read configuration through src/config.ts" }],
    },
  },
  { files: ["src/api/**/*.ts"], rules: { "no-restricted-imports": restrict([noDrizzle, noOnnx, onlyServingSeam]) } },
  { files: ["src/api/**/service.ts"], rules: { "no-restricted-imports": restrict([noFastify, noDrizzle, noOnnx, onlyServingSeam]) } },
  { files: ["src/engine/**/*.ts"], rules: { "no-restricted-imports": restrict([noFastify, noDrizzle]) } },
  // the worker protocol's one definition, imported by the API and the engine alike
  { files: ["src/protocol/**/*.ts"], rules: { "no-restricted-imports": restrict([noFastify, noDrizzle, noOnnx]) } },
  { files: ["src/jobs/**/*.ts", "src/storage/**/*.ts"], rules: { "no-restricted-imports": restrict([noFastify]) } },
);
