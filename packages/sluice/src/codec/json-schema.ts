/**
 * Optional record validation against a user-supplied JSON Schema file (`--schema FILE`), with
 * Ajv (draft-07 and 2019/2020 keywords as Ajv supports them). Off by default: a record is any
 * JSON value. A schema that cannot be read or compiled is one SLUICE_INVALID_OPTION at start.
 */
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import { invalidOption } from '../core/errors.js';

/** Returns null when the value passes, else the first problem as `path: message`. */
export type RecordCheck = (value: unknown) => string | null;

export function compileJsonSchema(schema: unknown, label = 'schema'): RecordCheck {
  if (schema === null || (typeof schema !== 'object' && typeof schema !== 'boolean')) throw invalidOption(label, schema, 'a JSON Schema (an object or a boolean)');
  let validate: ReturnType<Ajv['compile']>;
  try {
    // allErrors off: the first problem is enough to refuse a record, and cheaper.
    validate = new Ajv({ strict: false, allErrors: false }).compile(schema as object);
  } catch (e) {
    throw invalidOption(label, `(${(e as Error).message})`, 'a JSON Schema Ajv can compile');
  }
  return (value) => {
    if (validate(value)) return null;
    const err = validate.errors?.[0];
    return err ? `${err.instancePath || '/'}: ${err.message ?? 'does not match the schema'}` : 'does not match the schema';
  };
}

export function loadJsonSchema(path: string): RecordCheck {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw invalidOption('--schema', path, `a readable JSON Schema file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let schema: unknown;
  try {
    schema = JSON.parse(text);
  } catch (e) {
    throw invalidOption('--schema', path, `a JSON file (${(e as Error).message})`);
  }
  return compileJsonSchema(schema, `--schema ${path}`);
}
