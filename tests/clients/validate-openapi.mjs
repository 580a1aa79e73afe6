// The OpenAPI document at the URL given, checked by @seriousme/openapi-schema-validator (an ES
// module, which jest's CommonJS runtime cannot load): prints {valid, errors, version}.
import { Validator } from '@seriousme/openapi-schema-validator';

const res = await fetch(process.argv[2]);
const validator = new Validator();
const result = await validator.validate(await res.json());
console.log(JSON.stringify({ ...result, version: validator.version }));
