// Validates Kubernetes objects against the JSON schemas of npm kubernetes-models (built-in kinds)
// and @kubernetes-models/prometheus-operator (ServiceMonitor, PrometheusRule): types, required
// fields, enums and patterns. Usage: node validate_manifests.mjs NODE_MODULES OBJECTS.json
// (a JSON array of objects). Prints one line per object; exits 1 if any is invalid or unknown.
import { readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [nodeModules, objectsFile] = process.argv.slice(2);
const objects = JSON.parse(readFileSync(objectsFile, "utf8"));

function modelFile(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com")
    return join(nodeModules, "@kubernetes-models/prometheus-operator", group, version, `${kind}.js`);
  return join(nodeModules, "kubernetes-models", group || ".", version, `${kind}.js`);
}

let failed = 0;
for (const object of objects) {
  const name = `${object.kind}/${object.metadata?.name}`;
  const file = modelFile(object.apiVersion, object.kind);
  if (!existsSync(file)) {
    console.log(`FAIL ${name}: no schema for ${object.apiVersion} ${object.kind}`);
    failed++;
    continue;
  }
  const Model = (await import(pathToFileURL(file).href))[object.kind];
  try {
    new Model(object).validate();
    console.log(`ok ${name}`);
  } catch (error) {
    console.log(`FAIL ${name}: ${error.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
