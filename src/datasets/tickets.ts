import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mulberry32 } from '../random.ts';

/**
 * Synthetic support tickets with gold labels, for the `tickets` task (prompts/tickets.md), drawn from phrase
 * templates with a seed. They exist so that the free path (`npm run sim-teacher`) has enough labeled text for a
 * student worth measuring: datasets/tickets.jsonl holds 40 hand-written tickets, too few to train or evaluate on.
 * Not a benchmark of language understanding: the classes are told apart by their words, and a fifth of the tickets
 * go on to a second request of another class (the gold label is the first) so that a student does not have it easy.
 */
export const TICKET_LABELS = ['billing', 'bug report', 'feature request', 'other'] as const;
type TicketLabel = (typeof TICKET_LABELS)[number];

/** `{a|b|c}` picks one; `#` a number; `$` an amount. */
const TEMPLATES: Record<TicketLabel, string[]> = {
  billing: [
    'I was charged {twice|two times|three times} for {my subscription|the annual plan|the pro plan|my team seats} {this month|last week|in March|yesterday}.',
    'Please {refund|reverse|cancel} the {payment|charge|invoice} # from {last month|my last order|this week}.',
    'Why did my {invoice|monthly bill|renewal} go up to $ {when my plan did not change|without notice|this year}?',
    'How do I {change|update|remove} the {credit card|payment method|billing address|VAT number} on my account?',
    'My {card|PayPal|bank transfer} payment {failed|was declined|bounced} but I was still {charged|billed} $.',
    'I {cancelled|downgraded} my plan {last month|weeks ago|on the 3rd} and I am still being {charged|billed}.',
    'Can I get an {invoice|receipt} with my company name for the $ {payment|charge}?',
    'The {discount|coupon|promo code} # was not applied to my {invoice|order|renewal}.',
  ],
  'bug report': [
    'The app {crashes|freezes|shows a blank screen} when I {open|tap|export} the {settings page|report|dashboard|calendar} on {Android 14|iOS 17|Windows 11|Firefox|Safari}.',
    'Since the {last update|version #|new release} {sync|search|notifications|the upload button} {stopped working|is broken|returns wrong results}.',
    'I get error # when I try to {log in|upload a file|save my changes|open a shared link}.',
    'The {export|CSV download|PDF report} {is empty|has missing rows|shows the wrong dates} since {Monday|the update|last week}.',
    'Clicking {Save|Send|Submit} {does nothing|spins forever|logs me out} in the {web app|desktop app|mobile app}.',
    '{Images|Attachments|Comments} {disappear|do not load|show twice} after I {refresh|reopen the page|switch tabs}.',
    'The {totals|charts|page numbers} are {wrong|off by one|not updated} in the {dashboard|weekly report|summary view}.',
  ],
  'feature request': [
    'Could you {add|support|build} {a dark mode|export to CSV|two-factor login|a Linux app|keyboard shortcuts|custom fields}?',
    'It would be {great|really useful|nice} if {the calendar|the editor|reports|the mobile app} {could|would} {work offline|show week numbers|support tags|sync with Outlook}.',
    'Any plans to {support|integrate with|offer} {Slack|Google Drive|Zapier|Jira|Teams} {soon|this year|at some point}?',
    'Please consider {adding|building|offering} {bulk editing|an API for reports|more themes|recurring tasks|a public roadmap}.',
    'I would love {a way|an option|a setting} to {hide archived items|pin projects|set reminders|change the font size}.',
    'We need {single sign-on|audit logs|role permissions|data residency in the EU} before we can {roll it out|buy more seats|switch our team}.',
  ],
  other: [
    'How do I {reset my password|change my email|add a team member|rename my workspace}?',
    'Thanks, {the new design|your support team|the latest release} is {great|really helpful|a big improvement}!',
    'Where can I find {the privacy policy|your office address|the API docs|the terms of service}?',
    'I want to {delete my account|transfer ownership of my workspace|merge two accounts}.',
    'Do you {offer|have|run} {training sessions|a partner program|student accounts|webinars} {for new users|in Europe|this month}?',
    'Who is my {account manager|contact for security questions|contact for press inquiries}?',
  ],
};

const OPENERS = ['', '', 'Hi, ', 'Hello team, ', 'Hey, ', 'Good morning. '];
const CLOSERS = ['', '', ' Thanks.', ' Thank you!', ' Best regards.', ' Cheers.'];
/**
 * Share of tickets that go on to a second request of another class: the gold label is the first one. A bag of words
 * cannot tell which came first, so these are hard for a student (and for a keyword reader) by design.
 */
const TWO_REQUESTS = 0.2;

function fill(template: string, r: () => number): string {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)];
  return template
    .replace(/\{([^}]*)\}/g, (_, alts: string) => pick(alts.split('|')))
    .replace(/#/g, () => String(100 + Math.floor(r() * 9900)))
    .replace(/\$/g, () => `$${(5 + Math.floor(r() * 495)).toFixed(0)}.${String(Math.floor(r() * 100)).padStart(2, '0')}`);
}

/** A sentence continued after a comma: its first letter in lower case, but "I" stays. */
const lower = (s: string) => (/^I\b/.test(s) ? s : s[0].toLowerCase() + s.slice(1));

export interface Ticket {
  id: string;
  text: string;
  label: TicketLabel;
}

/** `count` distinct tickets, the labels in turn (balanced), the same for the same seed. */
export function makeTickets(count: number, seed: number): Ticket[] {
  const r = mulberry32(seed ^ 0x71c3e7);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)];
  const seen = new Set<string>();
  const out: Ticket[] = [];
  for (let i = 0; out.length < count; i++) {
    if (i > count * 50) throw new Error(`cannot draw ${count} distinct tickets (got ${out.length})`);
    const label = TICKET_LABELS[out.length % TICKET_LABELS.length];
    const opener = pick(OPENERS);
    const body = fill(pick(TEMPLATES[label]), r);
    const second = r() < TWO_REQUESTS ? ` Also, ${lower(fill(pick(TEMPLATES[pick(TICKET_LABELS.filter((l) => l !== label))]), r))}` : '';
    const text = `${opener}${opener.endsWith(', ') ? lower(body) : body}${second}${pick(CLOSERS)}`;
    if (seen.has(text)) continue;
    seen.add(text);
    out.push({ id: `s${String(out.length + 1).padStart(5, '0')}`, text, label });
  }
  return out;
}

/** Write DIR/tickets.jsonl (id, text, gold label); the path written. */
export function writeTickets(dir: string, count: number, seed: number): string {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'tickets.jsonl');
  writeFileSync(file, makeTickets(count, seed).map((t) => JSON.stringify(t)).join('\n') + '\n');
  return file;
}
