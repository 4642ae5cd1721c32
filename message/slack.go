package message

// slack renders c as a Slack incoming-webhook message: text (the summary,
// what notifications show) and blocks: a section with the summary in bold
// and the facts as fields, a context line (company, time, event type), and
// a button to the platform when there is a link.
//
//	{"text":"...","blocks":[
//	  {"type":"section","text":{"type":"mrkdwn","text":"*...*"},"fields":[{"type":"mrkdwn","text":"*Priority*\nCritical"}]},
//	  {"type":"context","elements":[{"type":"mrkdwn","text":"PT Kahatex · 2026-04-24 09:15 +07:00 · repair_request.created"}]},
//	  {"type":"actions","elements":[{"type":"button","text":{"type":"plain_text","text":"Open in SmartMaintenance"},"url":"..."}]}]}
func (r *Renderer) slack(c content) []byte {
	b := make([]byte, 0, 512+64*len(c.facts)+2*len(c.summary))
	b = append(b, `{"text":`...)
	b = appendMrkdwn(b, c.summary)
	b = append(b, `,"blocks":[{"type":"section","text":{"type":"mrkdwn","text":`...)
	b = appendMrkdwn(b, "*"+c.summary+"*")
	b = append(b, '}')
	if len(c.facts) > 0 {
		b = append(b, `,"fields":[`...)
		for i, f := range c.facts {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"type":"mrkdwn","text":`...)
			b = appendMrkdwn(b, "*"+f.title+"*\n"+f.value)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, '}')
	if c.context != "" {
		b = append(b, `,{"type":"context","elements":[{"type":"mrkdwn","text":`...)
		b = appendMrkdwn(b, c.context)
		b = append(b, `}]}`...)
	}
	if c.link != "" {
		b = append(b, `,{"type":"actions","elements":[{"type":"button","text":{"type":"plain_text","text":`...)
		b = appendString(b, r.linkText)
		b = append(b, `},"url":`...)
		b = appendString(b, c.link)
		b = append(b, `}]}`...)
	}
	return append(b, `]}`...)
}
