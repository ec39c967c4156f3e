import { constants } from 'node:os';

const ERRNO_NAMES = new Map<number, string>(Object.entries(constants.errno).map(([name, code]) => [code, name]));

/** A kernel refusal with its errno and what was being attempted. */
export class KernelError extends Error {
  override name = 'KernelError';
  constructor(
    /** Errno name, e.g. EEXIST; 'ETIMEDOUT' when the kernel did not answer in time. */
    readonly errno: string,
    /** The operation, as described to operators. */
    readonly operation: string,
    /** The kernel's own explanation (its extended acknowledgement), when it gave one. */
    readonly kernelMessage?: string,
  ) {
    const explanation = kernelMessage ?? ERRNO_HINTS[errno];
    super(`${operation}: ${errno}${explanation ? ` (${explanation})` : ''}`);
  }

  static fromCode(code: number, operation: string, kernelMessage?: string): KernelError {
    return new KernelError(ERRNO_NAMES.get(code) ?? `errno ${code}`, operation, kernelMessage);
  }
}

const ERRNO_HINTS: Record<string, string> = {
  EEXIST: 'a device with that name or VNI already exists',
  ENODEV: 'no such device',
  EPERM: 'CAP_NET_ADMIN is required',
  ENOBUFS: 'kernel out of buffer space, e.g. multicast group memberships',
  ENOMEM: 'kernel out of memory, e.g. multicast group memberships (net.core.optmem_max)',
  EBUSY: 'device or resource busy',
  ERANGE: 'value out of range',
  ENOTSUP: 'not supported by this kernel (missing module?)',
  EOPNOTSUPP: 'not supported by this kernel (missing module?)',
  EADDRINUSE: 'another device already uses this VNI, group and port',
  EINTR: 'the list kept changing while it was read',
  EAFNOSUPPORT: 'address family not supported, e.g. IPv6 settings on a device without IPv6',
};
