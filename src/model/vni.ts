/** VNIs, their canonical hex form, and the device names derived from them. */

export const VNI_MIN = 1;
export const VNI_MAX = 0xffffff;

const CANONICAL_HEX = /^[1-9a-f][0-9a-f]{0,5}$/;

/**
 * Parses a VNI from its canonical key form. Non-canonical spellings (upper
 * case, leading zeros, whitespace) are refused rather than normalised so two
 * etcd keys can never name the same network.
 */
export function parseVniHex(hex: string): number | undefined {
  if (!CANONICAL_HEX.test(hex)) return undefined;
  return Number.parseInt(hex, 16);
}

/**
 * Why `text` is not a VNI in its canonical form, with the canonical spelling when there is one:
 * the one wording for etcd keys, command operands and flags alike.
 */
export function nonCanonicalVniReason(text: string): string {
  const canonical = text.trim().toLowerCase().replace(/^0+/, '');
  const hint = canonical !== text && parseVniHex(canonical) !== undefined ? `; did you mean ${canonical}?` : '';
  return `${JSON.stringify(text)} is not a canonical VNI: write it in lowercase hex without leading zeros, 1…ffffff${hint}`;
}

export function isValidVni(vni: number): boolean {
  return Number.isInteger(vni) && vni >= VNI_MIN && vni <= VNI_MAX;
}

export function vniHex(vni: number): string {
  if (!isValidVni(vni)) throw new RangeError(`VNI ${vni} is outside ${VNI_MIN}…${VNI_MAX}`);
  return vni.toString(16);
}

export function vxlanName(hex: string): string {
  return `vxlan${hex}`;
}

export function bridgeName(hex: string): string {
  return `br${hex}`;
}
