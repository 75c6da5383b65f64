var csrf=null,page="status",otaTimer=null;
function $(i){return document.getElementById(i)}
function esc(s){return String(s==null?"":s).replace(/[&<>"']/g,function(c){return"&#"+c.charCodeAt(0)+";"})}
function say(t,ok){var d=document.createElement("div");d.className="msg "+(ok?"ok":"err");d.textContent=t;var f=$("flash");f.innerHTML="";f.appendChild(d);if(ok)setTimeout(function(){if(d.parentNode)f.removeChild(d)},4000)}
function api(m,p,body,raw){var h={};if(csrf)h["X-CSRF-Token"]=csrf;var o={method:m,headers:h,credentials:"same-origin"};
if(body!==undefined){if(raw){o.body=body;h["Content-Type"]="application/octet-stream"}else{o.body=JSON.stringify(body);h["Content-Type"]="application/json"}}
return fetch("/admin/api/"+p,o).catch(function(){throw new Error("no answer from the device: is it on, and on this network?")}).then(function(r){return r.text().then(function(t){var j={};try{j=t?JSON.parse(t):{}}catch(e){j={error:t}}
if(r.status==401&&p!="login"&&p!="session"){relogin();throw new Error(j.error||"login required")}
if(r.status==403&&/CSRF/.test(j.error||"")){relogin();throw new Error("the session changed in another tab: try again")}
if(r.status==409&&p=="login"){relogin()}if(!r.ok)throw new Error(j.error||j.reason||("HTTP "+r.status));return j})})}
function rows(t,o){$(t).innerHTML=o.map(function(r){return"<tr><th>"+esc(r[0])+"</th><td>"+(r[2]?r[1]:esc(r[1]))+"</td></tr>"}).join("")}
function showLogin(){$("app").className="hide";$("nav").className="hide";$("login").className="";}
function relogin(){csrf=null;start()}
function show(p){page=p||"status";$("flash").innerHTML="";document.querySelectorAll("[data-page]").forEach(function(s){s.className=s.getAttribute("data-page")==page?"":"hide"});
document.querySelectorAll("#nav a").forEach(function(a){a.className=a.getAttribute("href")=="#"+page?"on":""});load()}
window.onhashchange=function(){show(location.hash.slice(1))};
function start(){api("GET","session").then(function(s){$("devname").textContent=s.name||"iotutils";document.title=(s.name||"iotutils")+" admin";
if(s.logged_in){csrf=s.csrf;$("login").className="hide";$("app").className="";$("nav").className="";show(location.hash.slice(1)||"status")}
else{showLogin();$("logintitle").textContent="Log in";$("loginbtn").textContent="Log in";$("loginhint").textContent="";if(!s.password_set&&s.can_set_password){$("logintitle").textContent="Set the admin password";$("loginbtn").textContent="Set password";$("loginhint").textContent="No admin password yet: choose one (8+ characters)."}
else if(!s.password_set){$("loginhint").textContent="No admin password yet: set one in the setup portal (join the device's access point) or by provisioning."}}}).catch(function(e){say(e.message)})}
$("loginform").onsubmit=function(ev){ev.preventDefault();var pw=$("pw").value,first=$("loginbtn").textContent!="Log in";
(first?api("POST","password",{"new":pw}):api("POST","login",{password:pw})).then(function(r){csrf=r.csrf;$("pw").value="";say("Logged in",1);start()}).catch(function(e){say(e.message)})};
function load(){if(!csrf)return;if(page=="status")api("GET","status").then(function(s){var w=s.wifi||{},f=s.firmware||{};
rows("statustable",[["Device",s.name],["iotutils",s.iotutils],["Firmware",(f.version||"?")+" in "+f.slot+(f.pending?" (pending verify)":"")+(f.rolled_back?" — last update rolled back":"")],
["Uptime",fmtUp(s.uptime_s)],["Reset cause",s.reset_cause],["Heap free",Math.round(s.heap.free/1024)+" of "+Math.round(s.heap.total/1024)+" KB"],
["Wi-Fi",w.connected?(w.ssid+" "+w.ip+" ("+w.rssi+" dBm)"):(w.mode||"off")+(w.error?" — "+w.error:"")],["Access point",w.ap_ssid?(w.ap_ssid+" "+w.ap_ip):"off"],["Clients",s.clients==null?"-":s.clients]])}).catch(function(e){say(e.message)});
if(page=="wifi")loadWifi();if(page=="vars")loadVars();if(page=="ota")loadOta();if(page=="alexa")loadAlexa()}
function fmtUp(s){var d=Math.floor(s/86400),h=Math.floor(s%86400/3600),m=Math.floor(s%3600/60);return(d?d+"d ":"")+h+"h "+m+"m "+(s%60)+"s"}
function loadWifi(){api("GET","wifi").then(function(r){var w=r.status;rows("wifistatus",[["Mode",w.mode],["Connected",w.connected?"yes: "+w.ssid+" "+w.ip:"no"+(w.error?" ("+w.error+")":"")],["Access point",w.ap_ssid||"off"]]);
$("knownnets").innerHTML=r.networks.map(function(n){var s=typeof n=="string"?n:n.ssid;return"<tr><td>"+esc(s)+"</td><td class='r'><button class='sec' data-ssid='"+esc(s)+"' data-act='forget'>Forget</button></td></tr>"}).join("")||"<tr><td class='mut'>none</td></tr>";
$("apon").checked=!!w.ap_ssid}).catch(function(e){say(e.message)})}
function scan(){api("GET","wifi/scan").then(function(r){$("scanlist").innerHTML="<option value=''>choose…</option>"+r.networks.map(function(n){return"<option>"+esc(n.ssid)+"</option>"}).join("")}).catch(function(e){say(e.message)})}
$("scanlist").onchange=function(){if(this.value)$("ssid").value=this.value};
$("wifiadd").onsubmit=function(ev){ev.preventDefault();api("POST","wifi/networks",{ssid:$("ssid").value,password:$("wpw").value,hidden:$("hidden").checked,connect:true}).then(function(){$("wpw").value="";say("Network added",1);loadWifi()}).catch(function(e){say(e.message)})};
function forget(b){api("DELETE","wifi/networks/"+encodeURIComponent(b.getAttribute("data-ssid"))).then(function(){say("Forgotten",1);loadWifi()}).catch(function(e){say(e.message)})}
$("apform").onsubmit=function(ev){ev.preventDefault();var b={enabled:$("apon").checked};if($("apssid").value)b.ssid=$("apssid").value;if($("appw").value)b.password=$("appw").value;
api("PUT","wifi/ap",b).then(function(){say("Access point updated",1);loadWifi()}).catch(function(e){say(e.message)})};
function loadVars(){api("GET","vars").then(function(r){var sel=$("folders"),cur=sel.value;sel.innerHTML=r.folders.map(function(f){return"<option>"+esc(f)+"</option>"}).join("");if(cur&&r.folders.indexOf(cur)>=0)sel.value=cur;if(r.folders.length)loadFolder();else $("vartable").innerHTML="<tr><td class='mut'>nothing stored yet</td></tr>"}).catch(function(e){say(e.message)})}
function loadFolder(){var f=$("folders").value;if(!f)return;api("GET","vars/"+encodeURIComponent(f)).then(function(r){var names=Object.keys(r.vars).sort();
$("vartable").innerHTML="<tr><th>name</th><th>type</th><th>value</th><th></th></tr>"+names.map(function(n){var v=r.vars[n],val=typeof v.value=="object"?JSON.stringify(v.value):String(v.value);
return"<tr><td>"+esc(n)+"</td><td class='mut'>"+esc(v.type)+(v.lo!=null?" "+v.lo+"…"+v.hi:"")+"</td><td><input type='text' data-name='"+esc(n)+"' data-type='"+esc(v.type)+"' value='"+esc(val)+"'></td><td><button class='sec' data-act='saveVar'>Save</button> <button class='sec' data-act='delVar'>Delete</button></td></tr>"}).join("")}).catch(function(e){say(e.message)})}
function inputOf(b){return b.parentNode.parentNode.querySelector("input")}
function saveVar(b){var i=inputOf(b),t=i.getAttribute("data-type"),v=i.value;if(t=="json"||t=="list"||t=="set"||(t=="rgb"&&/^\s*\[/.test(v))){try{v=JSON.parse(v)}catch(e){say(i.getAttribute("data-name")+": not valid JSON");return}}
api("PUT","vars/"+encodeURIComponent($("folders").value)+"/"+encodeURIComponent(i.getAttribute("data-name")),{value:v}).then(function(r){i.value=typeof r.value=="object"?JSON.stringify(r.value):String(r.value);say("Saved "+r.name+" = "+i.value,1)}).catch(function(e){say(e.message)})}
function delVar(b){var i=inputOf(b);api("DELETE","vars/"+encodeURIComponent($("folders").value)+"/"+encodeURIComponent(i.getAttribute("data-name"))).then(function(){say("Deleted",1);loadVars()}).catch(function(e){say(e.message)})}
function exportVars(){api("GET","export").then(function(r){var a=document.createElement("a");a.href=URL.createObjectURL(new Blob([JSON.stringify(r,null,1)],{type:"application/json"}));a.download=($("devname").textContent||"iotutils").replace(/[^A-Za-z0-9._-]+/g,"-")+"-settings.json";a.click()}).catch(function(e){say(e.message)})}
function importVars(){var f=$("importfile").files[0];if(!f){say("choose a JSON file first");return}f.text().then(function(t){var d;try{d=JSON.parse(t)}catch(e){say("not a JSON file");return}
return api("POST","import",d).then(function(r){say("Imported "+r.imported+" values",1);loadVars()})}).catch(function(e){say(e.message)})}
function factoryReset(){if(!confirm("Erase all settings and reboot?"))return;api("POST","factory-reset",{confirm:"RESET"}).then(function(){say("Reset: rebooting…",1)}).catch(function(e){say(e.message)})}
function loadOta(){api("GET","ota").then(function(r){var s=r.status||{};rows("otastatus",[["Running",(s.version||"?")+" in "+(s.slot||"?")],["State",s.pending?"pending verify":"confirmed"],["Last update",s.rolled_back?"rolled back":"ok"],["Source",(r.repo||"-")+" "+(r.channel||"")]]);
if(document.activeElement.tagName!="INPUT"){$("otarepo").value=r.repo||"";$("otachannel").value=r.channel||"";var a=r.auto||{};$("otaauto").checked=!!a.on;$("otaevery").value=a.every_h||"";$("otaidle").value=a.idle_min==null?"":a.idle_min}
showProgress(r.progress)}).catch(function(e){say(e.message)})}
$("otaform").onsubmit=function(ev){ev.preventDefault();var b={repo:$("otarepo").value,channel:$("otachannel").value,auto:{on:$("otaauto").checked}};if($("otaevery").value)b.auto.every_hours=+$("otaevery").value;if($("otaidle").value!=="")b.auto.idle_minutes=+$("otaidle").value;
api("PUT","ota/settings",b).then(function(){say("OTA settings saved",1);loadOta()}).catch(function(e){say(e.message)})};
function otaCheck(){$("otacheck").textContent="checking…";api("POST","ota/check").then(function(r){$("otacheck").textContent="running "+r.current+", offered "+r.available+(r.newer?": update available":": up to date")}).catch(function(e){$("otacheck").textContent="";say(e.message)})}
function showProgress(p){if(!p)return;var pct=p.total?Math.floor(100*p.done/p.total):0;if(p.state=="rebooting")pct=100;$("otabar").value=pct;
$("otatext").textContent=p.state=="idle"?"idle":p.state=="failed"?"failed: "+p.error:p.state=="rebooting"?"100 % — installed "+(p.version||"")+", rebooting…":pct+" % ("+Math.round(p.done/1024)+" of "+Math.round(p.total/1024)+" KB)";
if(p.state=="downloading"&&!otaTimer)otaTimer=setInterval(pollOta,300);if(p.state!="downloading"&&otaTimer){clearInterval(otaTimer);otaTimer=null}}
function pollOta(){api("GET","ota/progress").then(showProgress).catch(function(){clearInterval(otaTimer);otaTimer=null})}
function otaUpdate(){api("POST","ota/update",{downgrade:$("otadown").checked,force:$("otaforce").checked}).then(function(r){showProgress(r.progress)}).catch(function(e){say(e.message)})}
function otaUpload(){var f=$("otafile").files[0],m=$("otaman").files[0];if(!f){say("choose firmware.bin first");return}if(!m){say("choose the release's ota.json too: it carries the signature");return}
m.text().then(function(t){var j;try{j=JSON.parse(t)}catch(e){throw new Error("ota.json is not JSON")}if(!j.sig)throw new Error("this ota.json is not signed: the device refuses unsigned images");
var q="?sig="+encodeURIComponent(j.sig)+(j.sha256?"&sha256="+encodeURIComponent(j.sha256):"")+($("otadown").checked?"&downgrade=1":"")+($("otaforce").checked?"&force=1":"");
showProgress({state:"downloading",done:0,total:f.size});return api("POST","ota/upload"+q,f,true)}).then(function(r){if(r)showProgress({state:"rebooting",version:r.version,done:1,total:1})}).catch(function(e){say(e.message);loadOta()})}
var pairTimer=null;
function loadAlexa(){api("GET","alexa").catch(function(e){clearTimeout(pairTimer);$("pairstate").textContent="pairing: unknown (no answer from the device)";throw e}).then(function(r){$("pairstate").textContent=r.pairing?"pairing open"+(r.pairing_left_s?" for "+r.pairing_left_s+" s":"")+": say \u201cAlexa, discover devices\u201d now":"pairing closed: new Alexa/Hue apps cannot register";
clearTimeout(pairTimer);if(r.pairing&&page=="alexa")pairTimer=setTimeout(loadAlexa,1000);
$("huetable").innerHTML=(r.users||[]).map(function(u){return"<tr><td>"+esc(u.name)+"</td><td class='mut'>"+(u.idle_h==null?"":"last used "+esc(u.idle_h)+" h ago")+"</td><td class='r'><button class='sec' data-n='"+esc(u.n)+"' data-act='forgetUser'>Forget</button></td></tr>"}).join("")||"<tr><td class='mut'>none</td></tr>";
$("alexatable").innerHTML=r.devices.map(function(d){return"<tr><td><input type='text' maxlength='32' value='"+esc(d.name)+"' data-id='"+d.id+"'></td><td><label><input type='checkbox' "+(d.on?"checked":"")+" data-id='"+d.id+"' data-change='toggle'> on</label></td><td class='mut'>"+(d.dimmable?d.brightness+" %":"on/off")+(d.wemo?" WeMo":"")+"</td><td><button class='sec' data-id='"+d.id+"' data-act='renameDev'>Rename</button> "+(d.app?"<span class='mut'>from the app</span>":"<button class='sec' data-id='"+d.id+"' data-act='removeDev'>Remove</button>")+"</td></tr>"}).join("")||"<tr><td class='mut'>no devices</td></tr>"}).catch(function(e){say(e.message)})}
function toggle(c){api("PUT","alexa/devices/"+c.getAttribute("data-id"),{on:c.checked}).then(function(){say("Switched "+(c.checked?"on":"off"),1)}).catch(function(e){say(e.message);loadAlexa()})}
function renameDev(b){var i=b.parentNode.parentNode.querySelector("input[type=text]");api("PUT","alexa/devices/"+b.getAttribute("data-id"),{name:i.value}).then(function(){say("Renamed",1);loadAlexa()}).catch(function(e){say(e.message)})}
function removeDev(b){api("DELETE","alexa/devices/"+b.getAttribute("data-id")).then(function(){say("Removed",1);loadAlexa()}).catch(function(e){say(e.message)})}
$("alexawemo").onchange=function(){$("alexadim").disabled=this.checked;if(this.checked)$("alexadim").checked=false};   // a WeMo socket is on/off only
$("alexaadd").onsubmit=function(ev){ev.preventDefault();api("POST","alexa/devices",{name:$("alexaname").value,dimmable:$("alexadim").checked,wemo:$("alexawemo").checked}).then(function(){$("alexaname").value="";say("Added",1);loadAlexa()}).catch(function(e){say(e.message)})};
function pairNow(){api("PUT","alexa/pairing",{allowed:true,seconds:60}).then(function(){say("Pairing open for 60 s",1);loadAlexa()}).catch(function(e){say(e.message)})}
function pairClose(){api("PUT","alexa/pairing",{allowed:false}).then(function(){say("Pairing closed",1);loadAlexa()}).catch(function(e){say(e.message)})}
function forgetUser(b){api("DELETE","alexa/users/"+encodeURIComponent(b.getAttribute("data-n"))).then(function(){say("Forgotten",1);loadAlexa()}).catch(function(e){say(e.message)})}
$("pwform").onsubmit=function(ev){ev.preventDefault();api("POST","password",{old:$("oldpw").value,"new":$("newpw").value}).then(function(r){csrf=r.csrf;$("oldpw").value=$("newpw").value="";say("Password changed",1)}).catch(function(e){say(e.message)})};
function rebootDev(){api("POST","reboot").then(function(){say("Rebooting…",1)}).catch(function(e){say(e.message)})}
function logout(){api("POST","logout").then(function(){relogin()}).catch(function(e){say(e.message)})}
// Buttons and checkboxes name their action in data-act / data-change: no inline handlers, so the
// page's Content-Security-Policy can forbid inline script.
var ACT={delVar:delVar,exportVars:exportVars,factoryReset:factoryReset,forget:forget,forgetUser:forgetUser,importVars:importVars,load:load,loadFolder:loadFolder,logout:logout,otaCheck:otaCheck,otaUpdate:otaUpdate,otaUpload:otaUpload,pairClose:pairClose,pairNow:pairNow,rebootDev:rebootDev,removeDev:removeDev,renameDev:renameDev,saveVar:saveVar,scan:scan,toggle:toggle};
document.addEventListener("click",function(e){var t=e.target.closest("[data-act]");if(!t)return;if(t.tagName=="BUTTON")e.preventDefault();ACT[t.getAttribute("data-act")](t)});
document.addEventListener("change",function(e){var t=e.target.closest("[data-change]");if(t)ACT[t.getAttribute("data-change")](t)});
start();
// ---- MQTT: broker settings (the password is write-only), status, a connection test ----
function loadMqtt(){api("GET","mqtt").then(function(r){var st=r.status;
rows("mqttstatus",[["Broker",st?(st.connected?"connected to ":"not connected to ")+st.host+":"+st.port+(st.tls?" (TLS)":""):"not configured"],["Last error",st&&st.last_error||r.error||"-"],
["Connections",st?st.connects+" ("+st.reconnects+" reconnects), "+st.sent+" sent, "+st.received+" received":"-"],["Device id",r.device_id],["Base topic",r.base_topic],
["Settings from",r.source=="admin"?"this page":r.source=="code"?"the device's code ("+r.code_url+")":"-"]]);
if(document.activeElement.tagName!="INPUT"&&document.activeElement.tagName!="TEXTAREA"){$("mqtturl").value=r.url||"";$("mqttuser").value=r.user||"";$("mqttpw").value="";
$("mqttpw").placeholder=r.password_set?"password: set (kept for the same host)":"password";$("mqttca").value=r.ca||"";$("mqttprefix").value=r.prefix||"";$("mqttmode").value=r.mode||"device";$("mqttbase").value=r.base||""}}).catch(function(e){say(e.message)})}
function mqttForm(){var b={url:$("mqtturl").value,ca:$("mqttca").value,prefix:$("mqttprefix").value,mode:$("mqttmode").value,base:$("mqttbase").value};if($("mqttpw").value)b.password=$("mqttpw").value;
if($("mqttuser").value||!/\/\/[^\/]*@/.test(b.url))b.user=$("mqttuser").value;return b}
$("mqttform").onsubmit=function(ev){ev.preventDefault();api("PUT","mqtt",mqttForm()).then(function(){$("mqttpw").value="";say("MQTT settings saved: reconnecting",1);setTimeout(loadMqtt,1500)}).catch(function(e){say(e.message)})};
function mqttTest(){$("mqtttest").textContent="connecting…";api("POST","mqtt/test",mqttForm()).then(function(r){$("mqtttest").textContent=r.result=="connected"?"connected ("+r.ms+" ms)":r.result+": "+r.reason}).catch(function(e){$("mqtttest").textContent="";say(e.message)})}
ACT.mqttTest=mqttTest;
(function(){var base=load;load=function(){base();if(page=="mqtt")loadMqtt()}})();
