/**
 * nftables rulesets that make a Linux network namespace behave like one of the NAT types of RFC 4787.
 *
 * Pure: every function returns ruleset text for `nft -f -` and touches nothing. The recipes were verified against
 * coturn's `turnutils_natdiscovery` (RFC 5780) and our own probes; see ../shared/research/nat-lab.md.
 *
 * | kind               | mapping (RFC 4787 §4.1)        | filtering (RFC 4787 §5)        | how                              |
 * |--------------------|--------------------------------|--------------------------------|----------------------------------|
 * | full-cone          | endpoint-independent           | endpoint-independent           | SNAT learnt into maps, DNAT back |
 * | address-restricted | endpoint-independent           | address-dependent              | as full-cone, DNAT only to known remote addresses |
 * | port-restricted    | endpoint-independent           | address-and-port-dependent     | plain `masquerade`               |
 * | symmetric          | address-and-port-dependent     | address-and-port-dependent     | `masquerade random`              |
 * | firewall           | none (public addresses on LAN) | address-and-port-dependent     | stateful filter only             |
 *
 * Hairpinning is off for every kind (RFC 4787 §6 says it should be on; most NATs in the wild still lack it, and
 * Burrow must cope), so nothing DNATs traffic arriving from the LAN. IPv6 is never translated: the filter chains live in
 * `table inet` and so apply the same stateful firewall to IPv6 behind every kind, while NAT lives in `table ip`.
 */

import { isIPv4 } from 'node:net';

/** The router behaviours the lab can emulate. */
export const NAT_KINDS = ['full-cone', 'address-restricted', 'port-restricted', 'symmetric', 'firewall'] as const;

export type NatKind = (typeof NAT_KINDS)[number];

export function isNatKind(value: string): value is NatKind {
  return (NAT_KINDS as readonly string[]).includes(value);
}

/** Whether a router of this kind translates IPv4 addresses (every kind but `firewall`). */
export function translatesAddresses(kind: NatKind): boolean {
  return kind !== 'firewall';
}

export interface RouterRulesOptions {
  /** Interface towards the internet. */
  readonly wan: string;
  /** Interface towards the hosts (for a bridged LAN, the bridge). */
  readonly lan: string;
  /** The router's IPv4 address on `wan`, the address its NAT maps to. */
  readonly publicAddress: string;
}

/** Table names, fixed so that later commands (loss, flushes) can address them. */
export const FILTER_TABLE = 'burrow_filter';
export const NAT_TABLE = 'burrow_nat';
export const LOSS_TABLE = 'burrow_loss';

/** How long the learnt cone mappings live without traffic; matches conntrack's established UDP timeout. */
const CONE_MAPPING_TIMEOUT = '120s';

const INTERFACE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;

function checkInterface(name: string): string {
  if (!INTERFACE_NAME.test(name)) {
    throw new RangeError(`invalid interface name ${JSON.stringify(name)}: want 1-15 characters of [A-Za-z0-9_.-]`);
  }
  return name;
}

/**
 * The complete ruleset of a router of `kind`. It starts with `flush ruleset`, so loading it replaces whatever the
 * namespace had (including a loss table).
 */
export function routerRuleset(kind: NatKind, options: RouterRulesOptions): string {
  const wan = checkInterface(options.wan);
  const lan = checkInterface(options.lan);
  if (!isIPv4(options.publicAddress)) {
    throw new RangeError(`invalid public address ${JSON.stringify(options.publicAddress)}: want an IPv4 address`);
  }
  return ['flush ruleset', filterTable(wan, lan), natTable(kind, wan, options.publicAddress)].join('\n');
}

/**
 * The filter chains every kind shares. The input chain must drop unsolicited packets: otherwise a peer's early probe
 * to the router's public address creates a local conntrack entry that steals the external port, and an
 * endpoint-independent mapping looks symmetric (nat-lab.md, pitfall 1). IPv6 neighbour discovery is let in on the WAN,
 * or the internet core could not resolve the router's address and every IPv6 route through it would be dead.
 */
function filterTable(wan: string, lan: string): string {
  return `table inet ${FILTER_TABLE} {
  chain input {
    type filter hook input priority filter; policy drop;
    iif "lo" accept
    ct state established,related accept
    iifname "${lan}" accept
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "${lan}" oifname "${wan}" accept
    ct status dnat accept
  }
}
`;
}

function natTable(kind: NatKind, wan: string, publicAddress: string): string {
  switch (kind) {
    case 'firewall':
      return '';
    case 'port-restricted':
      // Linux masquerade keeps the external port for an internal ip:port while any conntrack entry for it lives and
      // preserves the port when free: endpoint-independent mapping. Conntrack admits only replies from the exact
      // remote ip:port: address-and-port-dependent filtering.
      return `table ip ${NAT_TABLE} {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "${wan}" masquerade
  }
}
`;
    case 'symmetric':
      // A random external port for every new conntrack entry, i.e. per destination ip:port (kernel >= 5.0: fully random).
      return `table ip ${NAT_TABLE} {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "${wan}" masquerade random
  }
}
`;
    case 'full-cone':
    case 'address-restricted':
      return coneNatTable(kind, wan, publicAddress);
  }
}

/**
 * Full cone and address-restricted cone are not in mainline Linux. After SNAT has chosen an external port for a new
 * UDP flow, the `record` chain learns it (`eim`: internal ip.port -> external port, `fc`: external port -> internal
 * ip.port, `adf`: remote ip . external port). Later flows of the same internal socket are SNATed to the learnt port
 * (endpoint-independent mapping), and new inbound flows to a learnt port are DNATed back: from anyone (full cone) or only
 * from remote addresses the internal socket has sent to (address-restricted). TCP behaves as plain masquerade.
 */
function coneNatTable(kind: 'full-cone' | 'address-restricted', wan: string, publicAddress: string): string {
  const admit = kind === 'address-restricted' ? 'ip saddr . udp dport @adf ' : '';
  return `table ip ${NAT_TABLE} {
  map eim {
    type ipv4_addr . inet_service : inet_service; flags dynamic,timeout; timeout ${CONE_MAPPING_TIMEOUT};
  }
  map fc {
    type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout ${CONE_MAPPING_TIMEOUT};
  }
  set adf {
    type ipv4_addr . inet_service; flags dynamic,timeout; timeout ${CONE_MAPPING_TIMEOUT};
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "${wan}" meta l4proto udp snat ip to ${publicAddress} : ip saddr . udp sport map @eim
    oifname "${wan}" snat ip to ${publicAddress}
  }
  chain record {
    type filter hook postrouting priority srcnat + 10; policy accept;
    oifname "${wan}" meta l4proto udp ct direction original update @eim { ct original ip saddr . ct original proto-src : ct reply proto-dst } update @fc { ct reply proto-dst : ct original ip saddr . ct original proto-src } update @adf { ip daddr . ct reply proto-dst }
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "${wan}" ${admit}dnat ip addr . port to udp dport map @fc
  }
}
`;
}

/**
 * Commands that forget the NAT state nftables itself keeps (the learnt cone mappings). Conntrack state is separate
 * and flushed with `conntrack -F`. Empty for kinds that keep no such state.
 */
export function natStateFlushRuleset(kind: NatKind): string {
  switch (kind) {
    case 'full-cone':
    case 'address-restricted':
      return `flush map ip ${NAT_TABLE} eim\nflush map ip ${NAT_TABLE} fc\nflush set ip ${NAT_TABLE} adf\n`;
    case 'port-restricted':
    case 'symmetric':
    case 'firewall':
      return '';
  }
}

/**
 * Random loss of forwarded UDP and TCP packets in both directions (`tc netem` is not available on the lab's kernel).
 * The table is replaced as a whole, and `percent` 0 removes it. Its chain runs before the filter chain, so dropped
 * packets never create conntrack state.
 */
export function lossRuleset(percent: number): string {
  if (!Number.isInteger(percent) || percent < 0 || percent > 100) {
    throw new RangeError(`invalid loss ${String(percent)}: want an integer percentage from 0 to 100`);
  }
  // Declaring the table first makes the delete succeed whether or not it exists.
  const reset = `table inet ${LOSS_TABLE}\ndelete table inet ${LOSS_TABLE}\n`;
  if (percent === 0) return reset;
  // numgen's values are 0-99, so "< 100" is out of its range: all-loss is a plain drop.
  const sample = percent === 100 ? '' : `numgen random mod 100 < ${percent} `;
  return `${reset}table inet ${LOSS_TABLE} {
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    meta l4proto { udp, tcp } ${sample}drop
  }
}
`;
}
