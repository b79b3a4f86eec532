"""The page around report.html's sections: its inline style sheet and script."""

PAGE_CSS = """
:root{--ink:#1d1d1f;--muted:#5f6368;--line:#e3e3e3;--accent:#0072B2}
*{box-sizing:border-box}body{margin:0;color:var(--ink);background:#fafafa;
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
header,main,footer{max-width:1180px;margin:0 auto;padding:0 24px}
header{padding-top:28px}h1{font-size:1.7rem;margin:0 0 4px}h2{font-size:1.3rem;margin:0 0 12px;
padding-top:8px;border-bottom:2px solid var(--ink)}h3{font-size:1.05rem;margin:22px 0 8px}
.sub{color:var(--muted);margin:0 0 12px}nav ul{display:flex;flex-wrap:wrap;gap:6px 16px;padding:0;list-style:none}
nav a{color:var(--accent)}section{background:#fff;border:1px solid var(--line);border-radius:6px;
padding:14px 20px 18px;margin:18px 0}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px}.facts dt{font-weight:600}.facts dd{margin:0}
.table-wrap{overflow-x:auto;margin:8px 0}table{border-collapse:collapse;font-size:13px;width:100%}
th,td{border-bottom:1px solid var(--line);padding:4px 6px;text-align:left;vertical-align:top}
thead th{background:#f2f2f2;position:sticky;top:0;vertical-align:bottom;font-weight:600}td code{overflow-wrap:anywhere}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:after{content:" ↕";color:#aaa}
table.sortable th[aria-sort=ascending]:after{content:" ▲";color:var(--ink)}
table.sortable th[aria-sort=descending]:after{content:" ▼";color:var(--ink)}
table.gioia td{border:1px solid var(--line)}table.gioia td.concept{font-weight:600;width:22%}
table.gioia td.dimension{font-weight:700;width:16%;background:#f7f7f7}td.empty{color:var(--muted);font-style:italic}
.code{font-weight:600}.n{color:var(--muted);font-size:12px}.tag{background:#fde8c8;border-radius:3px;padding:0 4px;
font-size:11px}q.quote{display:block;color:#333;margin:3px 0 3px 10px;padding-left:8px;border-left:3px solid #ddd;
font-style:italic}table.confusion{width:auto}table.confusion th[scope=row]{background:#f2f2f2}
figure{margin:12px 0 20px}figure .svg{overflow-x:auto}.note{color:var(--muted);font-size:13px}
ul.counts{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:0 14px}
.map-body{display:flex;flex-wrap:wrap;gap:12px 24px;align-items:flex-start}.map-plot{flex:0 1 560px;min-width:0}
.map-view{flex:1 1 280px;min-width:0}ul.legend{list-style:none;margin:0;padding:0;font-size:13px;line-height:1.35}
ul.legend li{padding-left:18px;text-indent:-18px;margin:2px 0}.swatch{display:inline-block;width:11px;height:11px;
border-radius:50%;margin-right:7px;vertical-align:-1px}
.map-point{min-height:3.2em;margin:8px 0;padding:6px 10px;background:#f6f6f6;border-left:3px solid var(--accent)}
blockquote.citable{margin:8px 0;padding:6px 14px;background:#f6f9fc;border-left:3px solid var(--accent)}
figcaption{color:var(--muted);font-size:13px;margin:6px 0}
details{margin:6px 0}summary{cursor:pointer;color:var(--accent)}pre{font-size:12px;background:#f6f6f6;padding:10px;
overflow-x:auto}.download{display:inline-block;font-size:13px;color:var(--accent);background:none;border:0;
padding:0;cursor:pointer;text-decoration:underline}
.toggle button{font:inherit;font-size:13px;border:1px solid var(--accent);background:#fff;color:var(--accent);
padding:3px 10px;cursor:pointer}.toggle button[aria-pressed=true]{background:var(--accent);color:#fff}
.missing{background:#fff6e5;border-left:4px solid #E69F00;padding:6px 12px;margin:8px 0}.missing p{margin:0}
.missing ul{margin:4px 0}footer{font-size:13px;padding-bottom:30px}footer>p{color:var(--muted)}
@page{size:A4;margin:12mm}
@media print{nav,.toggle,.download,.map-point{display:none}body{background:#fff;font-size:11px}
header,main,footer{max-width:none;padding:0}section{border:0;padding:0;margin:10px 0}
table{font-size:8.5px}th,td{padding:2px 3px}thead th{position:static}table.sortable th:after{content:none}
.table-wrap,figure .svg,pre{overflow:visible}pre{white-space:pre-wrap;overflow-wrap:anywhere}
tr,figure,blockquote{break-inside:avoid}svg{max-width:100%;height:auto}}
"""

PAGE_JS = """
(function(){
function key(td){var v=td.hasAttribute('data-v')?td.getAttribute('data-v'):td.textContent.trim();
var n=parseFloat(v);return (v===''||isNaN(n))?[1,v.toLowerCase()]:[0,n];}
document.querySelectorAll('table.sortable').forEach(function(t){
t.querySelectorAll('thead th').forEach(function(th,i){th.tabIndex=0;
function go(){var asc=th.getAttribute('aria-sort')!=='ascending',b=t.tBodies[0],rows=Array.prototype.slice.call(b.rows);
t.querySelectorAll('thead th').forEach(function(h){h.removeAttribute('aria-sort');});
th.setAttribute('aria-sort',asc?'ascending':'descending');
rows.sort(function(x,y){var a=key(x.cells[i]),c=key(y.cells[i]);if(a[0]!==c[0])return a[0]-c[0];
var r=a[1]<c[1]?-1:a[1]>c[1]?1:0;return asc?r:-r;});rows.forEach(function(r){b.appendChild(r);});}
th.addEventListener('click',go);th.addEventListener('keydown',function(e){if(e.key==='Enter')go();});});});
document.querySelectorAll('.toggle').forEach(function(g){var fig=g.parentNode;
g.querySelectorAll('button').forEach(function(btn){btn.addEventListener('click',function(){
g.querySelectorAll('button').forEach(function(b){b.setAttribute('aria-pressed',b===btn?'true':'false');});
fig.querySelectorAll('.map-view').forEach(function(v){
v.hidden=v.getAttribute('data-view')!==btn.getAttribute('data-view');});
var svg=fig.querySelector('#map-svg');if(svg)svg.setAttribute('data-colour',btn.getAttribute('data-view'));
});});});
var map=document.getElementById('map-svg'),said=document.getElementById('map-point');
if(map&&said){function show(e){var t=e.target.tagName==='circle'&&e.target.querySelector('title');
if(t)said.textContent=t.textContent;}
map.addEventListener('mouseover',show);map.addEventListener('focusin',show);
map.addEventListener('keydown',function(e){var c=e.target,p=c.parentNode,k=e.key,n=null;if(c.tagName!=='circle')return;
if(k==='ArrowRight'||k==='ArrowDown')n=c.nextElementSibling;else if(k==='ArrowLeft'||k==='ArrowUp')
n=c.previousElementSibling;else if(k==='Home')n=p.firstElementChild;else if(k==='End')n=p.lastElementChild;
if(!n)return;e.preventDefault();c.setAttribute('tabindex','-1');n.setAttribute('tabindex','0');n.focus();});}
window.addEventListener('beforeprint',function(){var m=document.getElementById('methods-details');
if(m)m.open=true;});
var dl=document.getElementById('map-download');if(dl){dl.addEventListener('click',function(){
var d=JSON.parse(document.getElementById('map-data').textContent);
function q(v){v=v===null?'':String(v);if(/^[=+\\-@\\t\\r]/.test(v)&&isNaN(Number(v)))v="'"+v;
return /[",\\n]/.test(v)?'"'+v.replace(/"/g,'""')+'"':v;}
var lines=[d.columns.join(',')].concat(d.rows.map(function(r){return r.map(q).join(',');}));
var a=document.createElement('a');a.href=URL.createObjectURL(new Blob([lines.join('\\n')+'\\n'],{type:'text/csv'}));
a.download='utterance_map.csv';document.body.appendChild(a);a.click();a.remove();});}
})();
"""
