/**
 * A small TURN client for tests and the relay benchmark (not the library's client): one UDP socket, Allocate with the
 * 401 dance, CreatePermission, ChannelBind, Send indications and ChannelData, received data as events.
 */
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import type { Endpoint } from '../../src/codec/address.js';
import {
  decodeChannelData,
  decodeTurn,
  encodeChannelData,
  encodeTurn,
  looksLikeChannelData,
  TurnMethod,
  type TurnFields,
  type TurnMessage,
} from '../../src/codec/turn.js';

export interface TurnCredentials {
  readonly username: string;
  readonly password?: string;
  /** The long-term key (MD5(username:realm:password)); derived from `password` and the server's realm if absent. */
  readonly key?: Uint8Array;
}

export class TestTurnClient {
  readonly socket: dgram.Socket;
  private nonce: string | undefined;
  private realm: string | undefined;
  private key: Uint8Array | undefined;
  private readonly waiting = new Map<string, (m: TurnMessage) => void>();
  private readonly channels = new Map<number, Endpoint>();
  relayed: Endpoint | undefined;
  /** Data received from peers: (peer, payload). */
  onData: (peer: Endpoint, data: Buffer) => void = () => undefined;

  private constructor(
    socket: dgram.Socket,
    readonly server: Endpoint,
    private readonly creds: TurnCredentials,
  ) {
    this.socket = socket;
    socket.on('message', (msg) => { this.receive(msg); });
  }

  static async open(server: Endpoint, creds: TurnCredentials, localAddress = '127.0.0.1'): Promise<TestTurnClient> {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((r) => socket.bind(0, localAddress, r));
    socket.setRecvBufferSize(8 << 20);
    socket.setSendBufferSize(8 << 20);
    return new TestTurnClient(socket, server, creds);
  }

  get local(): Endpoint {
    const a = this.socket.address();
    return { address: a.address, port: a.port };
  }

  /** Sends a request and waits for its answer (retransmits twice). */
  async request(method: number, fields: TurnFields, signed = true): Promise<TurnMessage> {
    const { longTermKey } = await import('../../src/codec/turn.js');
    if (signed && this.realm !== undefined && this.key === undefined) {
      this.key = this.creds.key ?? longTermKey(this.creds.username, this.realm, this.creds.password ?? '');
    }
    const txid = randomBytes(12);
    const auth = signed && this.nonce !== undefined ? { username: this.creds.username, realm: this.realm ?? '', nonce: this.nonce } : {};
    // Without credentials, padded as real clients do: burrow serve never answers with more bytes than it was sent.
    const pad = 'username' in auth ? {} : { software: 'burrow test'.padEnd(88, ' ') };
    const bytes = encodeTurn(method, 'request', txid, { ...pad, ...fields, ...auth }, signed && this.key ? { key: this.key, fingerprint: true } : {});
    const answer = new Promise<TurnMessage>((resolve, reject) => {
      let tries = 0;
      const send = (): void => {
        if (tries++ === 3) {
          this.waiting.delete(Buffer.from(txid).toString('hex'));
          reject(new Error(`no answer to TURN method ${method}`));
          return;
        }
        this.socket.send(bytes, this.server.port, this.server.address);
        timer = setTimeout(send, 500);
      };
      let timer: NodeJS.Timeout | undefined;
      this.waiting.set(Buffer.from(txid).toString('hex'), (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      send();
    });
    const m = await answer;
    if (m.cls === 'error' && (m.error?.code === 401 || m.error?.code === 438) && m.nonce !== undefined && (this.nonce !== m.nonce)) {
      this.nonce = m.nonce;
      this.realm = m.realm ?? this.realm;
      this.key = undefined;
      return this.request(method, fields, signed);
    }
    return m;
  }

  async allocate(lifetime?: number): Promise<TurnMessage> {
    const m = await this.request(TurnMethod.ALLOCATE, { requestedTransport: 17, ...(lifetime !== undefined ? { lifetime } : {}) });
    if (m.cls === 'success') this.relayed = m.relayed;
    return m;
  }

  permit(...peers: Endpoint[]): Promise<TurnMessage> {
    return this.request(TurnMethod.CREATE_PERMISSION, { peers });
  }

  async bind(channel: number, peer: Endpoint): Promise<TurnMessage> {
    const m = await this.request(TurnMethod.CHANNEL_BIND, { channel, peers: [peer] });
    if (m.cls === 'success') this.channels.set(channel, peer);
    return m;
  }

  refresh(lifetime: number): Promise<TurnMessage> {
    return this.request(TurnMethod.REFRESH, { lifetime });
  }

  sendIndication(peer: Endpoint, data: Uint8Array): void {
    this.socket.send(encodeTurn(TurnMethod.SEND, 'indication', randomBytes(12), { peers: [peer], data }), this.server.port, this.server.address);
  }

  sendChannel(channel: number, data: Uint8Array): void {
    this.socket.send(encodeChannelData(channel, data), this.server.port, this.server.address);
  }

  close(): void {
    this.socket.close();
  }

  private receive(msg: Buffer): void {
    if (looksLikeChannelData(msg)) {
      const d = decodeChannelData(msg);
      const peer = d.ok ? this.channels.get(d.channel) : undefined;
      if (d.ok && peer) this.onData(peer, Buffer.from(d.data));
      return;
    }
    const d = decodeTurn(msg);
    if (!d.ok) return;
    if (d.msg.cls === 'indication' && d.msg.method === TurnMethod.DATA && d.msg.data && d.msg.peers[0]) {
      this.onData(d.msg.peers[0], Buffer.from(d.msg.data));
      return;
    }
    this.waiting.get(Buffer.from(d.msg.transactionId).toString('hex'))?.(d.msg);
  }
}
