#!/usr/bin/env node
'use strict';
/*
 * SMSC test peer built on the npm `smpp` package (node-smpp, smpp.createServer).
 *
 * It exists so our SMPP client is exercised against an SMPP server that is not our own code.
 * Wrapped by tests/peers/node_smsc.py (the `node_smsc` pytest fixture).
 *
 *   node smsc.js [--host 127.0.0.1] [--port 0] [--control-port 0]
 *                [--system-id gateway] [--password secret] [--exit-with-stdin] [--quiet]
 *
 * On start it prints ONE JSON line to stdout: {"smpp_port": N, "control_port": M}.
 * Everything else (one line per SMPP event) goes to stderr; --quiet drops the per-PDU lines, so a
 * benchmark (bench/compare.py) does not measure our logging.
 *
 * HTTP control API (JSON bodies and answers), on the control port:
 *   POST /configure    knobs (see DEFAULTS); omitted knobs reset to defaults -> the effective config
 *   GET  /submits      accepted submit_sm, in arrival order (raw short_message as hex, validity_period
 *                      as the ISO instant node-smpp reads from it)
 *   GET  /binds        {"count": successful binds since start/reset, "active": bound sessions now}
 *   POST /mo           {source, destination, short_message_hex, data_coding?, esm_class?} -> deliver_sm
 *                      to a bound receiver/transceiver (409 when none is bound)
 *   GET  /deliver_resps  every deliver_sm_resp (or generic_nack) the ESME sent back
 *   POST /mo_stream    {source, destination, rate, count, tag?} -> `count` MO deliver_sm at `rate` per
 *                      second, text "<tag> <i> <epoch ms sent>" (GSM 7-bit, tag defaults to "mo"), so a
 *                      receiver can time each one; answers at once (progress in /stats)
 *   GET  /stats        counters and times (epoch ms, sub-millisecond): submits, first/last submit,
 *                      DLRs and MO sent, the MO stream's progress
 *   POST /disconnect   destroy every SMPP connection (to test reconnects without a submit)
 *   POST /reset        defaults, forget submits/binds/deliver_resps/stats, cancel pending deliveries
 *                      and a running MO stream
 *   GET  /health       {"ok": true}
 */

const http = require('http');
const {performance} = require('perf_hooks');
const smpp = require('smpp');

// ---------------------------------------------------------------------------------------------
// node-smpp decodes short_message (and the message_payload TLV) into {udh: [IE buffers], message:
// string} using data_coding/esm_class. That is lossy: the UDH length octet is dropped, GSM 03.38
// text goes through a char table, UCS-2 through iconv. A test SMSC must see the octets exactly as
// the ESME sent them, so turn the decode half of those filters into the identity: the PDU fields
// then hold the raw Buffer that node-smpp sliced out of the PDU (sm_length octets). Encoding is
// untouched; node-smpp already passes Buffers through unchanged when it encodes our deliver_sm.
// ---------------------------------------------------------------------------------------------
function keepRawOnDecode(holder) {
	const original = holder.filter;
	holder.filter = {encode: original.encode, decode: (value) => value};
}
for (const name of Object.keys(smpp.commands)) {
	const params = smpp.commands[name].params || {};
	if (params.short_message && params.short_message.filter) {
		keepRawOnDecode(params.short_message);
	}
}
keepRawOnDecode(smpp.tlvs.message_payload);

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------
function parseArgs(argv) {
	const args = {
		host: '127.0.0.1',
		port: 0,
		controlPort: 0,
		systemId: 'gateway',
		password: 'secret',
		exitWithStdin: false,
		quiet: false,
	};
	for (let i = 0; i < argv.length; i++) {
		const arg = argv[i];
		const value = () => {
			if (i + 1 >= argv.length) {
				throw new Error('missing value for ' + arg);
			}
			return argv[++i];
		};
		switch (arg) {
			case '--host': args.host = value(); break;
			case '--port': args.port = Number(value()); break;
			case '--control-port': args.controlPort = Number(value()); break;
			case '--system-id': args.systemId = value(); break;
			case '--password': args.password = value(); break;
			case '--exit-with-stdin': args.exitWithStdin = true; break;
			case '--quiet': args.quiet = true; break;
			default: throw new Error('unknown argument ' + arg);
		}
	}
	return args;
}

const ARGS = parseArgs(process.argv.slice(2));

function log(...parts) {
	process.stderr.write('[node-smsc ' + new Date().toISOString().slice(11, 23) + '] ' + parts.join(' ') + '\n');
}

// One line per PDU: what a test wants to read after a failure, and what a benchmark must not pay for.
function event(...parts) {
	if (!ARGS.quiet) {
		log(...parts);
	}
}

// Wall-clock epoch milliseconds with sub-millisecond resolution (Date.now() truncates to 1 ms),
// comparable with Python's time.time() * 1000 on the same machine.
function epochMs() {
	return performance.timeOrigin + performance.now();
}

// ---------------------------------------------------------------------------------------------
// Knobs and state
// ---------------------------------------------------------------------------------------------
const DEFAULTS = Object.freeze({
	throttle_next: 0,        // answer the next N submit_sm with ESME_RTHROTTLED (not recorded)
	drop_after: null,        // destroy the socket right after the resp of the Nth accepted submit from now
	dlr_mode: 'both',        // 'tlv' | 'text' | 'both' | 'none' (none = no delivery receipts at all)
	id_format: 'hex',        // 'hex' | 'dec': message ids in submit_sm_resp
	dlr_id_format: null,     // id format in the DLR text; null = same as id_format
	dlr_stat: 'DELIVRD',     // stat word in the DLR text; also selects the message_state TLV
	dlr_err: '000',          // err field of the DLR text (3 digits)
	dlr_delay_ms: 0,         // delay between submit_sm_resp and the DLR deliver_sm
	reject_binds: false,     // answer every bind with ESME_RBINDFAIL
	respond_delay_ms: 0,     // delay before each submit_sm_resp
});

const MESSAGE_STATES = {
	ENROUTE: 1, DELIVRD: 2, EXPIRED: 3, DELETED: 4, UNDELIV: 5, ACCEPTD: 6, UNKNOWN: 7, REJECTD: 8,
};

const ESME_ROK = 0x00;
const ESME_RINVCMDID = 0x03;
const ESME_RINVBNDSTS = 0x04;
const ESME_RALYBND = 0x05;
const ESME_RBINDFAIL = 0x0D;
const ESME_RTHROTTLED = 0x58;
const REDELIVERY_DELAY_MS = 200;

function validateConfig(body) {
	if (body === null || typeof body !== 'object' || Array.isArray(body)) {
		throw new Error('body must be a JSON object');
	}
	for (const key of Object.keys(body)) {
		if (!(key in DEFAULTS)) {
			throw new Error('unknown knob ' + key);
		}
	}
	const cfg = Object.assign({}, DEFAULTS);
	for (const [key, value] of Object.entries(body)) {
		if (value !== null && value !== undefined) {
			cfg[key] = value;
		}
	}
	const nonNegInt = (key) => {
		if (!Number.isInteger(cfg[key]) || cfg[key] < 0) {
			throw new Error(key + ' must be a non-negative integer');
		}
	};
	nonNegInt('throttle_next');
	nonNegInt('dlr_delay_ms');
	nonNegInt('respond_delay_ms');
	if (cfg.drop_after !== null && (!Number.isInteger(cfg.drop_after) || cfg.drop_after < 1)) {
		throw new Error('drop_after must be null or an integer >= 1');
	}
	if (!['tlv', 'text', 'both', 'none'].includes(cfg.dlr_mode)) {
		throw new Error('dlr_mode must be tlv, text, both or none');
	}
	if (!['hex', 'dec'].includes(cfg.id_format)) {
		throw new Error('id_format must be hex or dec');
	}
	if (cfg.dlr_id_format !== null && !['hex', 'dec'].includes(cfg.dlr_id_format)) {
		throw new Error('dlr_id_format must be null, hex or dec');
	}
	if (typeof cfg.dlr_stat !== 'string' || !/^[A-Z]{1,7}$/.test(cfg.dlr_stat)) {
		throw new Error('dlr_stat must be an upper-case word of 1-7 letters');
	}
	if (typeof cfg.dlr_err !== 'string' || !/^[0-9]{3}$/.test(cfg.dlr_err)) {
		throw new Error('dlr_err must be 3 digits');
	}
	if (typeof cfg.reject_binds !== 'boolean') {
		throw new Error('reject_binds must be a boolean');
	}
	return Object.freeze(cfg);
}

let config = DEFAULTS;
let throttleLeft = 0;        // submits still to be throttled
let dropCountdown = null;    // accepted submits until the socket is dropped
let submits = [];
let deliverResps = [];
let bindCount = 0;
let stats = freshStats();
let moStream = null;         // the running /mo_stream: {timer}
let queued = [];             // deliveries waiting for a bound receiver/transceiver
const timers = new Set();    // pending DLR / redelivery timers (cancelled by reset)
let generation = 0;          // bumped by reset: answers to deliveries from before a reset are ignored
const sessions = new Set();
// Ids: 0xa0000000.. so the hex form always starts with a letter (hex/decimal mix-ups show).
let idCounter = 0xa0000000 + Math.floor(Math.random() * 0x0f000000);

// Delivery work (DLRs, redeliveries): cancelled by reset. Delayed responses use plain setTimeout.
function later(ms, fn) {
	const timer = setTimeout(() => {
		timers.delete(timer);
		fn();
	}, ms);
	timers.add(timer);
}

function applyConfig(cfg) {
	config = cfg;
	throttleLeft = cfg.throttle_next;
	dropCountdown = cfg.drop_after;
}

function freshStats() {
	return {
		submits: 0,
		first_submit_at: null,
		last_submit_at: null,
		dlrs_sent: 0,
		mo_sent: 0,
		deliver_resps: 0,
		mo_stream: null,     // {count, rate, sent, started_at, finished_at}
	};
}

function stopMoStream() {
	if (moStream !== null) {
		clearTimeout(moStream.timer);
		moStream = null;
	}
}

function reset() {
	applyConfig(DEFAULTS);
	submits = [];
	deliverResps = [];
	bindCount = 0;
	stats = freshStats();
	stopMoStream();
	queued = [];
	generation++;
	for (const timer of timers) {
		clearTimeout(timer);
	}
	timers.clear();
	for (const session of sessions) {
		session.awaiting.clear();
	}
}

function formatId(n, format) {
	return format === 'hex' ? n.toString(16) : n.toString(10);
}

function smppDate(date) {
	const two = (n) => String(n).padStart(2, '0');
	return two(date.getUTCFullYear() % 100) + two(date.getUTCMonth() + 1) + two(date.getUTCDate()) +
		two(date.getUTCHours()) + two(date.getUTCMinutes());
}

// Up to 20 printable ASCII characters of the submitted text, for the "text:" field of the DLR.
function receiptText(submit) {
	let body = Buffer.from(submit.short_message_hex, 'hex');
	if (body.length === 0 && submit.message_payload_hex) {
		body = Buffer.from(submit.message_payload_hex, 'hex');
	}
	if ((submit.esm_class & 0x40) && body.length > 0) {
		body = body.slice(body[0] + 1);
	}
	let text;
	if (submit.data_coding === 0x08) {
		const even = body.slice(0, body.length - (body.length % 2));
		text = Buffer.from(even).swap16().toString('utf16le');
	} else if ([0x00, 0x01, 0x03].includes(submit.data_coding)) {
		text = body.toString('latin1');
	} else {
		text = '';
	}
	return Array.from(text).slice(0, 20).map((c) => (c >= ' ' && c <= '~' ? c : '?')).join('');
}

function canReceive(session) {
	return !session.socket.destroyed && !session.dropping &&
		(session.bound === 'receiver' || session.bound === 'transceiver');
}

function receiverFor(preferred) {
	if (preferred && sessions.has(preferred) && canReceive(preferred)) {
		return preferred;
	}
	for (const session of sessions) {
		if (canReceive(session)) {
			return session;
		}
	}
	return null;
}

// ---------------------------------------------------------------------------------------------
// deliver_sm (DLRs and MO), with one redelivery after a non-zero deliver_sm_resp
// ---------------------------------------------------------------------------------------------
function deliver(delivery) {
	const session = receiverFor(delivery.session);
	if (!session) {
		log('no bound receiver; queueing', delivery.kind, delivery.message_id || '');
		queued.push(delivery);
		return false;
	}
	sendDelivery(session, delivery);
	return true;
}

function sendDelivery(session, delivery) {
	const pdu = new smpp.PDU('deliver_sm', Object.assign({}, delivery.fields));
	const sentIn = generation;
	const sent = session.send(pdu, (resp) => {
		session.awaiting.delete(pdu.sequence_number);
		if (sentIn !== generation) {
			return;
		}
		const status = resp.command_status;
		stats.deliver_resps++;
		deliverResps.push({
			command_status: status,
			command: resp.command,
			kind: delivery.kind,
			message_id: delivery.message_id || null,
			attempt: delivery.attempt,
			sequence_number: pdu.sequence_number,
		});
		event('deliver_sm_resp', 'status=0x' + status.toString(16), delivery.kind, 'attempt', delivery.attempt);
		if (status !== ESME_ROK && delivery.attempt === 1) {
			later(REDELIVERY_DELAY_MS, () => deliver(Object.assign({}, delivery, {attempt: 2, session})));
		}
	});
	if (!sent) {
		queued.push(delivery);
		return;
	}
	session.awaiting.set(pdu.sequence_number, delivery);
	if (delivery.kind === 'dlr') {
		stats.dlrs_sent++;
	} else {
		stats.mo_sent++;
	}
	event('deliver_sm', delivery.kind, delivery.message_id || '', 'seq', pdu.sequence_number,
		'attempt', delivery.attempt);
}

function flushQueue() {
	const pending = queued;
	queued = [];
	for (const delivery of pending) {
		deliver(delivery);
	}
}

function scheduleReceipt(submit, session, cfg) {
	const wanted = submit.registered_delivery & 0x03;
	const failed = cfg.dlr_stat !== 'DELIVRD';
	if (cfg.dlr_mode === 'none' || !(wanted === 1 || (wanted === 2 && failed))) {
		return;
	}
	later(cfg.dlr_delay_ms, () => {
		const idNumber = submit.id_number;
		const textId = formatId(idNumber, cfg.dlr_id_format || submit.id_format);
		const fields = {
			source_addr_ton: submit.dest_addr_ton,
			source_addr_npi: submit.dest_addr_npi,
			source_addr: submit.destination_addr,
			dest_addr_ton: submit.source_addr_ton,
			dest_addr_npi: submit.source_addr_npi,
			destination_addr: submit.source_addr,
			esm_class: 0x04,
			data_coding: 0x00,
			short_message: Buffer.alloc(0),
		};
		if (cfg.dlr_mode === 'text' || cfg.dlr_mode === 'both') {
			const text = 'id:' + textId + ' sub:001 dlvrd:' + (failed ? '000' : '001') +
				' submit date:' + smppDate(new Date(submit.received_at)) +
				' done date:' + smppDate(new Date()) +
				' stat:' + cfg.dlr_stat + ' err:' + cfg.dlr_err + ' text:' + receiptText(submit);
			fields.short_message = Buffer.from(text, 'ascii');
		}
		if (cfg.dlr_mode === 'tlv' || cfg.dlr_mode === 'both') {
			fields.receipted_message_id = submit.message_id;
			fields.message_state = MESSAGE_STATES[cfg.dlr_stat] || MESSAGE_STATES.UNKNOWN;
		}
		deliver({kind: 'dlr', message_id: submit.message_id, fields, attempt: 1, session});
	});
}

// ---------------------------------------------------------------------------------------------
// SMPP server
// ---------------------------------------------------------------------------------------------
function respond(session, pdu, options, sendCallback) {
	return session.send(pdu.response(options || {}), sendCallback);
}

function onBind(session, pdu) {
	const mode = pdu.command.slice('bind_'.length);
	if (session.bound) {
		respond(session, pdu, {command_status: ESME_RALYBND});
		return;
	}
	if (config.reject_binds || pdu.system_id !== ARGS.systemId || pdu.password !== ARGS.password) {
		log('refusing', pdu.command, 'system_id=' + pdu.system_id, config.reject_binds ? '(reject_binds)' : '');
		respond(session, pdu, {command_status: ESME_RBINDFAIL});
		return;
	}
	session.bound = mode;
	bindCount++;
	log(pdu.command, 'ok; binds so far', bindCount);
	respond(session, pdu, {system_id: 'NODESMSC'}, () => {
		if (canReceive(session)) {
			flushQueue();
		}
	});
}

function onSubmit(session, pdu) {
	if (session.bound !== 'transmitter' && session.bound !== 'transceiver') {
		respond(session, pdu, {command_status: ESME_RINVBNDSTS});
		return;
	}
	const cfg = config;
	if (throttleLeft > 0) {
		throttleLeft--;
		log('submit_sm throttled; still to throttle', throttleLeft);
		setTimeout(() => respond(session, pdu, {command_status: ESME_RTHROTTLED}), cfg.respond_delay_ms);
		return;
	}
	const idNumber = ++idCounter;
	const submit = {
		service_type: pdu.service_type,
		source_addr_ton: pdu.source_addr_ton,
		source_addr_npi: pdu.source_addr_npi,
		source_addr: pdu.source_addr,
		dest_addr_ton: pdu.dest_addr_ton,
		dest_addr_npi: pdu.dest_addr_npi,
		destination_addr: pdu.destination_addr,
		esm_class: pdu.esm_class,
		protocol_id: pdu.protocol_id,
		registered_delivery: pdu.registered_delivery,
		data_coding: pdu.data_coding,
		// node-smpp reads the SMPP time (absolute or relative) into a Date: the instant it names.
		validity_period: pdu.validity_period instanceof Date ? pdu.validity_period.toISOString() : null,
		short_message_hex: Buffer.isBuffer(pdu.short_message) ? pdu.short_message.toString('hex') : '',
		message_payload_hex: Buffer.isBuffer(pdu.message_payload) ? pdu.message_payload.toString('hex') : null,
		message_id: formatId(idNumber, cfg.id_format),
		id_format: cfg.id_format,
		sequence_number: pdu.sequence_number,
		received_at: Date.now(),
	};
	Object.defineProperty(submit, 'id_number', {value: idNumber, enumerable: false});
	submits.push(submit);
	const at = epochMs();
	stats.submits++;
	if (stats.first_submit_at === null) {
		stats.first_submit_at = at;
	}
	stats.last_submit_at = at;
	let drop = false;
	if (dropCountdown !== null) {
		dropCountdown--;
		if (dropCountdown === 0) {
			dropCountdown = null;
			drop = true;
			// Handle nothing more from this connection (pipelined PDUs included).
			session.dropping = true;
			session.pause();
		}
	}
	event('submit_sm', submit.source_addr, '->', submit.destination_addr, 'dc=' + submit.data_coding,
		'esm=0x' + submit.esm_class.toString(16), 'id', submit.message_id, drop ? '(dropping after resp)' : '');
	setTimeout(() => {
		const sent = respond(session, pdu, {message_id: submit.message_id}, () => {
			if (drop) {
				log('dropping connection after submit_sm_resp', submit.message_id);
				session.socket.destroy();
			}
			scheduleReceipt(submit, session, cfg);
		});
		if (!sent) {
			log('connection gone before submit_sm_resp for', submit.message_id);
		}
	}, cfg.respond_delay_ms);
}

function onPdu(session, pdu) {
	if (session.dropping) {
		return;
	}
	if (pdu.isResponse()) {
		if (pdu.command === 'generic_nack') {
			log('generic_nack from ESME, status 0x' + pdu.command_status.toString(16));
		}
		return; // deliver_sm_resp is handled by the send callback
	}
	switch (pdu.command) {
		case 'bind_transceiver':
		case 'bind_transmitter':
		case 'bind_receiver':
			onBind(session, pdu);
			break;
		case 'submit_sm':
			onSubmit(session, pdu);
			break;
		case 'enquire_link':
			respond(session, pdu);
			break;
		case 'unbind':
			log('unbind');
			session.bound = null;
			respond(session, pdu, {}, () => session.close());
			break;
		case 'unknown':
			respond(session, pdu); // generic_nack ESME_RINVCMDID
			break;
		default:
			respond(session, pdu, {command_status: ESME_RINVCMDID});
	}
}

const server = smpp.createServer((session) => {
	session.bound = null;
	session.dropping = false;
	session.awaiting = new Map(); // sequence_number -> delivery sent and not answered yet
	sessions.add(session);
	log('connection from', session.socket.remotePort);
	session.on('pdu', (pdu) => onPdu(session, pdu));
	session.on('error', (err) => {
		// Includes undecodable PDUs: node-smpp stops reading that connection, so end it visibly.
		log('session error:', err.message);
		session.socket.destroy();
	});
	session.on('close', () => {
		sessions.delete(session);
		log('connection closed', session.socket.remotePort);
		// A deliver_sm nobody answered is delivered again on the next bind, like a real SMSC would.
		for (const delivery of session.awaiting.values()) {
			queued.push(delivery);
		}
		session.awaiting.clear();
	});
});
server.on('error', (err) => {
	log('server error:', err.stack || err.message);
	process.exit(1);
});

// ---------------------------------------------------------------------------------------------
// HTTP control server
// ---------------------------------------------------------------------------------------------
class HttpError extends Error {
	constructor(status, message) {
		super(message);
		this.status = status;
	}
}

function readJson(req) {
	return new Promise((resolve, reject) => {
		const chunks = [];
		req.on('data', (chunk) => chunks.push(chunk));
		req.on('error', reject);
		req.on('end', () => {
			const text = Buffer.concat(chunks).toString('utf8').trim();
			if (!text) {
				resolve({});
				return;
			}
			try {
				resolve(JSON.parse(text));
			} catch (e) {
				reject(new HttpError(400, 'invalid JSON: ' + e.message));
			}
		});
	});
}

function parseMo(body) {
	if (body === null || typeof body !== 'object') {
		throw new HttpError(400, 'body must be a JSON object');
	}
	for (const key of ['source', 'destination']) {
		if (typeof body[key] !== 'string') {
			throw new HttpError(400, key + ' must be a string');
		}
	}
	const hex = body.short_message_hex === undefined ? '' : body.short_message_hex;
	if (typeof hex !== 'string' || !/^([0-9a-fA-F]{2})*$/.test(hex) || hex.length > 510) {
		throw new HttpError(400, 'short_message_hex must be hex of at most 255 octets');
	}
	const octet = (key) => {
		const value = body[key] === undefined ? 0 : body[key];
		if (!Number.isInteger(value) || value < 0 || value > 255) {
			throw new HttpError(400, key + ' must be an integer 0..255');
		}
		return value;
	};
	return {
		source_addr_ton: 1,
		source_addr_npi: 1,
		source_addr: body.source,
		dest_addr_ton: 1,
		dest_addr_npi: 1,
		destination_addr: body.destination,
		esm_class: octet('esm_class'),
		data_coding: octet('data_coding'),
		short_message: Buffer.from(hex, 'hex'),
	};
}

function parseMoStream(body) {
	if (body === null || typeof body !== 'object') {
		throw new HttpError(400, 'body must be a JSON object');
	}
	for (const key of ['source', 'destination']) {
		if (typeof body[key] !== 'string') {
			throw new HttpError(400, key + ' must be a string');
		}
	}
	if (typeof body.rate !== 'number' || !(body.rate > 0)) {
		throw new HttpError(400, 'rate must be a positive number (MO per second)');
	}
	if (!Number.isInteger(body.count) || body.count < 1) {
		throw new HttpError(400, 'count must be a positive integer');
	}
	const tag = body.tag === undefined ? 'mo' : body.tag;
	if (typeof tag !== 'string' || !/^[A-Za-z0-9]{1,20}$/.test(tag)) {
		throw new HttpError(400, 'tag must be 1-20 letters or digits');
	}
	return {source: body.source, destination: body.destination, rate: body.rate, count: body.count, tag};
}

// MO at a fixed rate, on a 1 ms timer: each tick sends every MO that is due by then, so a late
// tick catches up instead of lowering the offered rate. The send time in the text is taken as
// the PDU is handed to the socket.
function startMoStream(spec) {
	stopMoStream();
	const progress = {count: spec.count, rate: spec.rate, sent: 0, started_at: epochMs(), finished_at: null};
	stats.mo_stream = progress;
	const started = performance.now();
	const stream = {timer: null};
	moStream = stream;
	const tick = () => {
		const due = Math.min(spec.count, Math.floor((performance.now() - started) * spec.rate / 1000) + 1);
		while (progress.sent < due) {
			const session = receiverFor(null);
			if (!session) {
				break; // the ESME is away: what is due goes out, late, once it binds again
			}
			const text = spec.tag + ' ' + progress.sent + ' ' + epochMs().toFixed(3);
			const fields = {
				source_addr_ton: 1,
				source_addr_npi: 1,
				source_addr: spec.source,
				dest_addr_ton: 1,
				dest_addr_npi: 1,
				destination_addr: spec.destination,
				esm_class: 0,
				data_coding: 0,
				short_message: Buffer.from(text, 'ascii'),
			};
			sendDelivery(session, {kind: 'mo', message_id: null, fields, attempt: 1, session});
			progress.sent++;
		}
		if (progress.sent >= spec.count) {
			progress.finished_at = epochMs();
			moStream = null;
			return;
		}
		stream.timer = setTimeout(tick, 1);
	};
	tick();
}

async function route(req) {
	const path = req.url.split('?')[0];
	const key = req.method + ' ' + path;
	switch (key) {
		case 'GET /health':
			return {ok: true};
		case 'POST /configure': {
			const body = await readJson(req);
			let cfg;
			try {
				cfg = validateConfig(body);
			} catch (e) {
				throw new HttpError(400, e.message);
			}
			applyConfig(cfg);
			log('configure', JSON.stringify(cfg));
			return cfg;
		}
		case 'GET /submits':
			return submits;
		case 'GET /binds': {
			let active = 0;
			for (const session of sessions) {
				if (session.bound) {
					active++;
				}
			}
			return {count: bindCount, active};
		}
		case 'POST /mo': {
			const fields = parseMo(await readJson(req));
			const session = receiverFor(null);
			if (!session) {
				throw new HttpError(409, 'no bound receiver/transceiver session');
			}
			sendDelivery(session, {kind: 'mo', message_id: null, fields, attempt: 1, session});
			return {ok: true};
		}
		case 'GET /deliver_resps':
			return deliverResps;
		case 'POST /mo_stream': {
			const spec = parseMoStream(await readJson(req));
			if (!receiverFor(null)) {
				throw new HttpError(409, 'no bound receiver/transceiver session');
			}
			startMoStream(spec);
			log('mo_stream', spec.count, 'MO at', spec.rate, '/s');
			return {ok: true};
		}
		case 'GET /stats':
			return stats;
		case 'POST /disconnect': {
			const count = sessions.size;
			for (const session of sessions) {
				session.socket.destroy();
			}
			log('disconnect: destroyed', count, 'connection(s)');
			return {closed: count};
		}
		case 'POST /reset':
			reset();
			log('reset');
			return {ok: true};
		default:
			throw new HttpError(404, 'no route ' + key);
	}
}

const control = http.createServer((req, res) => {
	route(req).then((result) => [200, result], (err) => {
		if (!(err instanceof HttpError)) {
			log('control error:', err.stack || err.message);
		}
		return [err.status || 500, {error: err.message}];
	}).then(([status, payload]) => {
		const body = JSON.stringify(payload);
		res.writeHead(status, {'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body)});
		res.end(body);
	});
});

// ---------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------
function listen(srv, port) {
	return new Promise((resolve, reject) => {
		srv.once('error', reject);
		srv.listen(port, ARGS.host, () => {
			srv.removeListener('error', reject);
			resolve(srv.address().port);
		});
	});
}

async function main() {
	const smppPort = await listen(server, ARGS.port);
	const controlPort = await listen(control, ARGS.controlPort);
	process.stdout.write(JSON.stringify({smpp_port: smppPort, control_port: controlPort}) + '\n');
	log('listening: smpp', ARGS.host + ':' + smppPort, 'control', ARGS.host + ':' + controlPort);
	if (ARGS.exitWithStdin) {
		// The parent holds our stdin open; when it goes away (even killed), so do we.
		process.stdin.on('end', () => process.exit(0));
		process.stdin.on('error', () => process.exit(0));
		process.stdin.resume();
	}
}

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

main().catch((err) => {
	log('failed to start:', err.stack || err.message);
	process.exit(1);
});
