#!/usr/bin/env node
'use strict';
/*
 * ESME test peer built on the npm `smpp` package's client (smpp.connect): a customer's own SMPP
 * software as far as our SMPP server can tell. Wrapped by tests/peers/node_esme.py.
 *
 *   node esme.js --port N [--host 127.0.0.1] --system-id ID --password PW [--mode transceiver]
 *
 * Commands, one JSON object a line on stdin:
 *   {"op": "submit", "tag": T, "source_addr": S, "destination_addr": D, "short_message_hex": H,
 *    "data_coding": 0, "esm_class": 0, "registered_delivery": 1, tlvs...}  -> submit_sm
 *   {"op": "raw", "hex": H}      write these octets to the socket as they are
 *   {"op": "unbind"} / {"op": "close"}
 * Events, one JSON object a line on stdout:
 *   {"event": "bind_resp", "status": N}
 *   {"event": "submit_sm_resp", "tag": T, "status": N, "message_id": M}
 *   {"event": "deliver_sm", "esm_class", "source_addr", "destination_addr", "data_coding",
 *    "short_message_hex", "message_payload_hex", "receipted_message_id", "message_state"}
 *      (answered with deliver_sm_resp ROK)
 *   {"event": "generic_nack", "status": N, "sequence": S} / {"event": "close"} / {"event": "error", ...}
 */

const readline = require('readline');
const smpp = require('smpp');

// Keep octets as they are (see smsc.js): the test decodes them itself.
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

const args = {host: '127.0.0.1', mode: 'transceiver'};
for (let i = 2; i < process.argv.length; i += 2) {
	args[process.argv[i].replace(/^--/, '').replace(/-/g, '_')] = process.argv[i + 1];
}

function emit(obj) {
	process.stdout.write(JSON.stringify(obj) + '\n');
}

function hex(value) {
	return Buffer.isBuffer(value) ? value.toString('hex') : null;
}

const session = smpp.connect({url: `smpp://${args.host}:${args.port}`});
session.on('error', (err) => emit({event: 'error', message: String(err && err.message)}));
session.on('close', () => {
	emit({event: 'close'});
	process.exit(0);
});
session.on('deliver_sm', (pdu) => {
	emit({
		event: 'deliver_sm',
		esm_class: pdu.esm_class,
		source_addr: pdu.source_addr,
		destination_addr: pdu.destination_addr,
		data_coding: pdu.data_coding,
		short_message_hex: hex(pdu.short_message),
		message_payload_hex: hex(pdu.message_payload),
		receipted_message_id: pdu.receipted_message_id || null,
		message_state: pdu.message_state === undefined ? null : pdu.message_state,
	});
	session.send(pdu.response());
});
session.on('generic_nack', (pdu) => emit({event: 'generic_nack', status: pdu.command_status, sequence: pdu.sequence_number}));
session.on('enquire_link', (pdu) => session.send(pdu.response()));
session.on('unbind', (pdu) => {
	session.send(pdu.response());
	session.close();
});

session.on('connect', () => {
	session[`bind_${args.mode}`]({system_id: args.system_id, password: args.password}, (pdu) => {
		emit({event: 'bind_resp', status: pdu.command_status});
	});
});

const rl = readline.createInterface({input: process.stdin});
rl.on('line', (line) => {
	const cmd = JSON.parse(line);
	if (cmd.op === 'submit') {
		const {op, tag, short_message_hex, message_payload_hex, ...fields} = cmd;
		if (short_message_hex !== undefined) fields.short_message = Buffer.from(short_message_hex, 'hex');
		if (message_payload_hex !== undefined) fields.message_payload = Buffer.from(message_payload_hex, 'hex');
		session.submit_sm(fields, (pdu) => {
			emit({event: 'submit_sm_resp', tag, status: pdu.command_status, message_id: pdu.message_id || null});
		});
	} else if (cmd.op === 'raw') {
		session.socket.write(Buffer.from(cmd.hex, 'hex'));
	} else if (cmd.op === 'unbind') {
		session.unbind();
	} else if (cmd.op === 'close') {
		session.destroy();
	}
});
rl.on('close', () => session.destroy());
