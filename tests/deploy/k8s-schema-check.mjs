// Offline schema check of rendered Kubernetes manifests with kubernetes-models (the
// OpenAPI schemas of Kubernetes 1.3x compiled to validators): wrong types, missing required
// fields, bad enum values. Kinds it does not know (CRDs such as PodMonitor) must be listed
// in SKIPPED_KINDS or the check fails.
// Usage: node k8s-schema-check.mjs NODE_MODULES_DIR FILE.yaml...
//        node k8s-schema-check.mjs NODE_MODULES_DIR --self-test
import { createRequire } from "node:module";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";

const SKIPPED_KINDS = new Set(["monitoring.coreos.com/v1/PodMonitor"]);
const [modulesDir, ...args] = process.argv.slice(2);
const yaml = createRequire(path.join(modulesDir, "noop.js"))("js-yaml");

async function modelFor(apiVersion, kind) {
  const file = path.join(modulesDir, "kubernetes-models", apiVersion, `${kind}.js`);
  if (!existsSync(file)) return null;
  return (await import(file))[kind];
}

// Returns a list of "file: Kind/name: problem" strings.
async function check(docs, label) {
  const problems = [];
  for (const doc of docs.filter(Boolean)) {
    const id = `${label}: ${doc.kind}/${doc.metadata?.name}`;
    if (SKIPPED_KINDS.has(`${doc.apiVersion}/${doc.kind}`)) {
      console.log(`${id}: skipped (CRD, no schema)`);
      continue;
    }
    const Model = await modelFor(doc.apiVersion, doc.kind);
    if (!Model) {
      problems.push(`${id}: no schema for ${doc.apiVersion} ${doc.kind}`);
      continue;
    }
    try {
      new Model(doc).validate();
      console.log(`${id}: ok`);
    } catch (error) {
      problems.push(`${id}: ${error.message}`);
    }
  }
  return problems;
}

const BAD = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  replicas: two
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: c
          image: x
          ports: [{containerPort: "grpc"}]
          startupProbe: {grpc: {service: moondream.v1.Moondream}}
`;

if (args[0] === "--self-test") {
  const problems = await check(yaml.loadAll(BAD), "self-test");
  if (problems.length === 0) {
    console.error("self-test: a broken Deployment passed validation");
    process.exit(1);
  }
  console.log(`self-test: broken Deployment rejected:\n  ${problems.join("\n  ")}`);
  process.exit(0);
}

let problems = [];
for (const file of args) {
  problems = problems.concat(await check(yaml.loadAll(readFileSync(file, "utf8")), file));
}
if (problems.length) {
  console.error(`schema problems:\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
