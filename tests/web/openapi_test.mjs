// Validates an OpenAPI document against the official OpenAPI 3.0 schema with
// @seriousme/openapi-schema-validator (pinned in package-lock.json):
//   node openapi_test.mjs gateway/web/openapi.json
// Prints {"valid": true} or the validator's errors, and exits 1 when invalid.
import { readFileSync } from "node:fs";
import { Validator } from "@seriousme/openapi-schema-validator";

const validator = new Validator();
const result = await validator.validate(JSON.parse(readFileSync(process.argv[2], "utf8")));
console.log(JSON.stringify({ valid: result.valid, version: validator.version, errors: result.errors ?? [] }));
process.exit(result.valid ? 0 : 1);
