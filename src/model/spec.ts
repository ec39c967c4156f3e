/** Network spec validation (DESIGN.md §1): raw etcd value → spec, or a reason a person can act on. */

export const MAX_SPEC_BYTES = 64 * 1024;
export const MAX_TEXT_FIELD = 256;
export const MTU_MIN = 68;
export const MTU_MAX = 65535;

export interface NetworkSpec {
  type: 'vxlan';
  mtu?: number;
  owner?: string;
  description?: string;
}

/** Bounded set of reasons, used as the `reason` label of vxnetd_spec_errors_total. */
export type SpecErrorCode =
  | 'invalid_key'
  | 'too_large'
  | 'invalid_json'
  | 'not_object'
  | 'wrong_type'
  | 'unknown_type'
  | 'mtu_out_of_range'
  | 'mtu_above_underlay'
  | 'reserved_group'
  | 'field_too_long';

export class SpecError extends Error {
  constructor(
    readonly code: SpecErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'SpecError';
  }
}

export type SpecResult = { ok: true; spec: NetworkSpec } | { ok: false; error: SpecError };

export function parseNetworkSpec(value: Uint8Array): SpecResult {
  try {
    return { ok: true, spec: parseOrThrow(value) };
  } catch (error) {
    if (error instanceof SpecError) return { ok: false, error };
    throw error;
  }
}

/** An attachment (DESIGN.md §1: any JSON object, `{}` is fine) is held to the same bounds as a spec. */
export function parseAttachment(value: Uint8Array): SpecError | undefined {
  try {
    parseObject(value, 'attachment');
    return undefined;
  } catch (error) {
    if (error instanceof SpecError) return error;
    throw error;
  }
}

function parseObject(value: Uint8Array, what: 'spec' | 'attachment'): Record<string, unknown> {
  if (value.length > MAX_SPEC_BYTES) {
    throw new SpecError('too_large', `${what} is ${value.length} bytes, the limit is ${MAX_SPEC_BYTES}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(value).toString('utf8'));
  } catch (error) {
    throw new SpecError('invalid_json', `${what} is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    const shown = parsed === null ? 'null' : Array.isArray(parsed) ? 'an array' : `a ${typeof parsed}`;
    throw new SpecError('not_object', `${what} must be a JSON object, got ${shown}`);
  }
  return parsed as Record<string, unknown>;
}

function parseOrThrow(value: Uint8Array): NetworkSpec {
  const fields = parseObject(value, 'spec');
  const spec: NetworkSpec = { type: 'vxlan' };

  if (fields.type !== undefined) {
    if (typeof fields.type !== 'string') throw wrongType('type', 'a string', fields.type);
    if (fields.type !== 'vxlan') {
      throw new SpecError('unknown_type', `type ${quoteBrief(fields.type)} is not supported (only "vxlan")`);
    }
  }
  if (fields.mtu !== undefined) {
    if (typeof fields.mtu !== 'number' || !Number.isInteger(fields.mtu)) throw wrongType('mtu', 'an integer', fields.mtu);
    if (fields.mtu < MTU_MIN || fields.mtu > MTU_MAX) {
      throw new SpecError('mtu_out_of_range', `mtu ${fields.mtu} is outside ${MTU_MIN}…${MTU_MAX}`);
    }
    spec.mtu = fields.mtu;
  }
  for (const name of ['owner', 'description'] as const) {
    const field = fields[name];
    if (field === undefined) continue;
    if (typeof field !== 'string') throw wrongType(name, 'a string', field);
    if (field.length > MAX_TEXT_FIELD) {
      throw new SpecError('field_too_long', `${name} is ${field.length} characters, the limit is ${MAX_TEXT_FIELD}`);
    }
    spec[name] = field;
  }
  return spec;
}

function wrongType(field: string, expected: string, got: unknown): SpecError {
  return new SpecError('wrong_type', `${field} must be ${expected}, got ${quoteBrief(got)}`);
}

/** A value as JSON, cut to a length a status or a log line can carry, and marked as cut. */
export function quoteBrief(value: unknown, max = 40): string {
  return cutText(JSON.stringify(value) ?? String(value), max);
}

/** Text cut to `max` characters and marked as cut: statuses and log lines stay small whatever etcd holds. */
export function cutText(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max)}… (${text.length} characters, cut)` : text;
}
